"""Shared fixtures: real Redis, real PostgreSQL, the demo home (built once per run).

Tests that need a service skip when it is absent, unless ``LORA_ROUTER_REQUIRE_SERVICES=1``
(set by ``.ci/run``), which turns such a skip into a failure. Only GPU and vLLM tests may
skip in CI.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest

from lora_router.ground.home import Home

REDIS_URL = os.environ.get("LORA_ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_URL = os.environ.get("LORA_ROUTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which Redis database the run flushes and which PostgreSQL it writes to."""
    return [
        f"redis: tests that use Redis FLUSH database {REDIS_URL} (before and after each); "
        "set LORA_ROUTER_TEST_REDIS_URL to use another",
        f"postgresql: a schema per test, dropped afterwards, in {PG_URL}; "
        "set LORA_ROUTER_TEST_DATABASE_URL to use another",
    ]


def pytest_sessionstart(session: pytest.Session) -> None:
    """``pytest -q`` (``make test``) prints no header: say it there all the same."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.get_verbosity() < 0:
        for line in pytest_report_header(session.config):
            reporter.write_line(line)


def require(reason: str) -> None:
    """Skip for a missing service, or fail when CI demands every service."""
    if os.environ.get("LORA_ROUTER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis on a dedicated db index, flushed before and after each test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require(f"Redis not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A real PostgreSQL database with a fresh schema per test (dropped afterwards)."""
    import psycopg

    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        require(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    conn.close()


# What serving a home writes into it: never carried from one test module to another.
_SERVED_STATE = ("log", "flags", "demo-runs", "incidents", "flywheel")


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """The demo build (tiny base, tokenizer, two adapters, cards, routes), once per run.

    Never handed to a test directly: ``demo_home`` and ``copy_home`` are copies of it, so
    no test can leave route state, log rows or card changes behind for another.
    ``LORA_ROUTER_TEST_DEMO_HOME`` reuses an existing build (local iteration only).
    """
    from lora_router.demo.build import build_demo

    reuse = os.environ.get("LORA_ROUTER_TEST_DEMO_HOME")
    if reuse:
        home = Home.at(reuse)
        if not home.base_lock.is_file():
            build_demo(home)
        return home
    home = Home.at(tmp_path_factory.mktemp("demo-build"))
    build_demo(home)
    return home


def _copy(src: Home, dst: Path) -> Home:
    import shutil

    shutil.copytree(src.root, dst, ignore=shutil.ignore_patterns(*_SERVED_STATE))
    return Home.at(dst)


@pytest.fixture(scope="module")
def demo_home(demo_build: Home, tmp_path_factory: pytest.TempPathFactory) -> Home:
    """The demo home for one test module: a fresh copy of the build (6 MB)."""
    return _copy(demo_build, tmp_path_factory.mktemp("demo-home") / "home")


@pytest.fixture
def copy_home(demo_build: Home, tmp_path: Path) -> Home:
    """A private, writable copy of the demo home for one test."""
    return _copy(demo_build, tmp_path / "home")
