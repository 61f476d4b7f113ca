"""A fuzz run of the gateway's own OpenAPI document (schemathesis) over real HTTP.

A gateway on a private copy of the demo home (the fuzzer may change its routes) serves its
``/openapi.json``; schemathesis generates a bounded number of requests per operation, valid
and not, and checks every answer: never a 5xx, every status declared for the operation,
every content type declared, and every body matching its declared schema.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.settings import Settings
from tests.api.conftest import serve_app
from tests.conftest import free_port

EXAMPLES = 15  # per operation and mode (valid / invalid); the run stays under a minute here

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def gateway_url(demo_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz") / "home"
    shutil.copytree(demo_home.root, root, ignore=shutil.ignore_patterns("log"))
    settings = Settings(home=root, port=free_port(), request_timeout_s=20)
    served = serve_app(create_app(settings), settings.host, settings.port)  # the real log
    yield served.url
    served.stop()


def strategies(operation: Any) -> list[tuple[str, Any]]:
    """The documented examples, then valid and invalid generated requests."""
    examples = [("example", st) for st in operation.get_strategies_from_examples()]
    return [*examples, *((m.value, operation.as_strategy(generation_mode=m))
                         for m in GenerationMode)]


def fuzz(operation: Any, kind: str, strategy: Any) -> str | None:
    """Run up to ``EXAMPLES`` requests drawn from ``strategy``; the failure, if any."""

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=60)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body): nothing to run
        return None
    except (Exception, FailureGroup) as exc:  # failed checks: reported with the others
        return f"{operation.label} ({kind}): {exc}"
    return None


def test_every_answer_is_declared_and_none_is_a_server_error(gateway_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures = [f for op in operations for kind, strategy in strategies(op)
                if (f := fuzz(op, kind, strategy)) is not None]
    assert not failures, "\n\n".join(failures)
