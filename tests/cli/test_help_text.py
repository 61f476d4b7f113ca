"""Every ``--help`` at 80 columns: sentences, no ``<bool>`` for flags, nothing cut."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lora_router.router.cli.main import app


def _paths(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _paths(sub, (*path, name))


PATHS = list(_paths(get_command(app)))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "root")
def test_help_reads_as_sentences_at_80_columns(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "<bool>" not in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    listed = out.split("Commands:", 1)[1] if "Commands:" in out else ""
    assert "..." not in listed  # no command's summary cut short
    assert "\u2500" not in out and "\u256d" not in out  # plain text, no rich panels
    if "--home" in out:  # a path is never broken at its hyphen
        assert "~/.lora-router" in out


def test_the_command_list_shows_whole_first_sentences() -> None:
    out = CliRunner().invoke(app, ["registry", "--help"], env={"COLUMNS": "80"}).output
    flat = " ".join(out.split())
    assert "Retire an adapter for good; refused while a route (live, canary, shadow, rollback " \
        "target: in Redis when REDIS_URL is set)" in flat
    assert "Re-retiring" not in flat  # only the first sentence in the list


def test_flags_show_no_type_and_arguments_are_capitals() -> None:
    out = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "80"}).output
    assert "--json " in out and "--json <" not in out
    assert "ROUTE" in out
