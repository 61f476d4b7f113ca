"""CLI plumbing (``router.cli.common``): a mistyped ``--home`` fails in one line instead of
creating a home; pydantic validation errors are one line, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from lora_router.ground.home import Home
from lora_router.router.cli.common import friendly_errors
from lora_router.router.cli.main import app

ENV = {"DATABASE_URL": "", "REDIS_URL": "", "COLUMNS": "300"}


def _run(*args: str) -> object:
    return CliRunner().invoke(app, list(args), env=ENV)


@pytest.mark.parametrize("args", [
    ["log", "tail"], ["log", "stats"], ["registry", "validate"],
    ["registry", "trained-on", "--subject", "CUST-1"], ["routes"], ["base", "verify"],
])
def test_a_missing_home_fails_in_one_line_and_creates_nothing(tmp_path: Path,
                                                              args: list[str]) -> None:
    missing = tmp_path / "nohome"
    result = CliRunner().invoke(app, [*args, "--home", str(missing)], env=ENV)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no lora-router home at {missing}")
    assert "Traceback" not in result.output
    assert not missing.exists()


def test_registry_commands_need_a_pinned_base(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()  # a directory, but not a home: no base.lock.json
    result = _run("registry", "trained-on", "--subject", "CUST-1", "--home", str(tmp_path))
    assert result.exit_code == 2  # not a "no" from an empty registry
    assert "no lora-router home" in result.output and "no base.lock.json" in result.output


def test_base_pin_still_creates_a_home(tmp_path: Path) -> None:
    home = tmp_path / "new"  # `base pin` may make the home: it fails on the missing base,
    result = _run("base", "pin", "--name", "x", "--home", str(home))  # not on the home
    assert result.exit_code == 2 and "no lora-router home" not in result.output


def test_an_existing_home_is_read(copy_home: Home) -> None:
    result = _run("log", "tail", "--home", str(copy_home.root))
    assert result.exit_code == 0, result.output


class _Thing(BaseModel):
    name: str
    percent: float = Field(ge=0, le=100)


def test_a_validation_error_is_one_line_exit_2() -> None:
    one = typer.Typer()

    @one.command()
    @friendly_errors
    def make(percent: float) -> None:
        _Thing.model_validate({"name": ["not", "a", "string"], "percent": percent})

    result = CliRunner().invoke(one, ["150"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == ["error: invalid _Thing: name: Input should be a valid string "
                     "(and 1 more)"], result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
