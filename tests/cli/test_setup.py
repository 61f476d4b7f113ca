"""The set-up a newcomer meets: one home for the Makefile and the CLI, the wrapper, the
port and torch variables of ``make run`` (checked with ``make -n``), the test services."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lora_router.ground.home import Home
from lora_router.router.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _make_n(*args: str, **env: str) -> str:
    """``make -n`` in the repository, with a venv path that does not exist (so the install
    steps are listed too)."""
    base = {k: v for k, v in os.environ.items()
            if k not in {"LORA_ROUTER_HOME", "PORT", "TORCH", "TORCH_INDEX", "MAKEFLAGS"}}
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "VENV=/nonexistent/venv", *args],
                         capture_output=True, text=True, timeout=60, env=base | env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _base_verify(cwd: Path, monkeypatch: pytest.MonkeyPatch, **env: str | None) -> str:
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, ["base", "verify"], env={"LORA_ROUTER_HOME": None, **env})
    return f"{result.exit_code} {result.output}"


def test_the_cli_finds_the_home_make_run_builds(copy_home: Home, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.move(copy_home.root, project / ".home")
    # no --home, no $LORA_ROUTER_HOME: ./.home, as `make run` builds and serves it
    assert _base_verify(project, monkeypatch).startswith("0 ok: ")
    # $LORA_ROUTER_HOME wins over ./.home
    out = _base_verify(project, monkeypatch, LORA_ROUTER_HOME=str(tmp_path / "nowhere"))
    assert out.startswith("2 ") and "nowhere" in out
    # elsewhere (HOME without a ~/.lora-router): one line that says the rule
    out = _base_verify(tmp_path, monkeypatch, HOME=str(tmp_path))
    assert out.startswith("2 ") and "./.home" in out and "$LORA_ROUTER_HOME" in out
    assert "make run" in out and "Traceback" not in out


@needs_make
def test_make_run_serves_the_cli_default_home_on_the_given_port() -> None:
    out = _make_n("run")
    assert f"serve --home {ROOT}/.home --host 127.0.0.1 --port 8000" in out
    assert "exec env HF_HUB_OFFLINE=1" in out  # signals reach the server itself
    out = _make_n("run", PORT="8001", LORA_ROUTER_HOME="/srv/lr")
    assert "demo build --home /srv/lr" in out and "--home /srv/lr" in out
    assert "--port 8001" in out


@needs_make
def test_the_torch_build_is_chosen_by_a_variable() -> None:
    default = _make_n("install")
    assert "pip install -q  'torch==2.13.0'" in default and "--index-url" not in default
    cpu = _make_n("install", "TORCH=cpu")
    assert "--index-url https://download.pytorch.org/whl/cpu 'torch==2.13.0'" in cpu
    gpu = _make_n("install", "TORCH=cu126")
    assert "--index-url https://download.pytorch.org/whl/cu126" in gpu
    own = _make_n("install", "TORCH_INDEX=https://example.org/simple", "TORCH_SPEC=torch==2.12.1")
    assert "--index-url https://example.org/simple 'torch==2.12.1'" in own


def test_the_wrapper_runs_the_venv_cli() -> None:
    wrapper = ROOT / "lora-router"
    assert os.access(wrapper, os.X_OK)
    if not (ROOT / ".venv" / "bin" / "lora-router").exists():
        pytest.skip("no .venv here (the wrapper runs .venv/bin/lora-router)")
    out = subprocess.run([str(wrapper), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "set-live" in out.stdout


def test_the_test_run_says_which_redis_database_it_flushes() -> None:
    env = dict(os.environ) | {"LORA_ROUTER_TEST_REDIS_URL": "redis://127.0.0.1:6379/13"}
    this = f"{Path(__file__).relative_to(ROOT)}::{test_pyproject_declares_the_license.__name__}"
    out = subprocess.run(  # -q, as `make test` runs it: pytest prints no header there
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", this],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    assert "FLUSH database redis://127.0.0.1:6379/13" in out.stdout, out.stdout + out.stderr
    assert "set LORA_ROUTER_TEST_REDIS_URL to use another" in out.stdout


def test_pyproject_declares_the_license() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == "Apache-2.0"  # a table: 3 setuptools warnings
    assert "setuptools>=77" in data["build-system"]["requires"]
