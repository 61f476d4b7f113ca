"""Listing commands: ``--json`` that parses; tables that never cut or break an id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lora_router.router.cli.main import app
from lora_router.router.cli.output import Col, Listing, fit_widths
from tests.flags.test_route_service import make_home

LIVE, NEXT, OLD = "customer-support-triage@v12", "customer-support-triage@v13", "cst@v11"
ROUTES_YAML = f"""\
routes:
  customer-support-triage:
    live: {LIVE}
    rollback_target: {OLD}
"""
ROUTE = "customer-support-triage"
IDS = (LIVE, NEXT, OLD)


@pytest.fixture
def cli(tmp_path: Path, redis_url: str) -> Any:
    home = tmp_path / "home"
    make_home(home, list(IDS))
    (home / "routes.yaml").write_text(ROUTES_YAML)
    env = {"REDIS_URL": redis_url, "LORA_ROUTER_HOME": str(home)}

    def invoke(*args: str, **extra: str) -> Any:
        result = CliRunner().invoke(app, list(args), env={**env, **extra})
        assert result.exit_code == 0, result.output
        return result

    alone = "--allow-no-replicas"  # no gateway here: the changes are only stored
    invoke("canary", ROUTE, NEXT, "--percent", "10", "--reason", "try the next one",
           "--actor", "alice.on-call", alone)
    invoke("promote", ROUTE, "--reason", "clean canary: slice_es holds, en holds too", alone)
    invoke("rollback", ROUTE, "--reason", "INC-42: slice_es F1 dropped after the promotion",
           alone)
    return invoke


def test_json_output_of_routes_route_show_and_audit_parses(cli: Any) -> None:
    routes = json.loads(cli("routes", "--json").stdout)
    assert [r["live"] for r in routes["routes"]] == [LIVE]
    assert routes["store"]["backend"]
    shown = json.loads(cli("route", "show", ROUTE, "--json").stdout)
    assert shown["live"] == LIVE and shown["version"] == 4
    audit = json.loads(cli("audit", ROUTE, "--json").stdout)
    assert [e["action"] for e in audit["entries"]] == ["seed", "canary", "promote", "rollback"]
    assert audit["entries"][-1]["before"]["live"] == NEXT


def _lines_with_ids_whole(out: str) -> None:
    for adapter in IDS:
        assert adapter in out, out
    for piece in ("customer-", "support-", "triage@"):  # an id broken across lines
        for line in out.splitlines():
            if line.rstrip().endswith(piece):
                raise AssertionError(f"id broken at {piece!r}:\n{out}")


@pytest.mark.parametrize("columns", ["80", "60", "200"])
def test_audit_on_a_terminal_never_cuts_or_breaks_an_id(cli: Any, columns: str) -> None:
    out = cli("audit", ROUTE, COLUMNS=columns, TTY_COMPATIBLE="1", NO_COLOR="1").stdout
    assert all(len(line) <= int(columns) for line in out.splitlines()), out
    _lines_with_ids_whole(out)
    assert "\u2026" not in out  # no ellipsis
    assert "INC-42" in out and "alice.on-call" in out


def test_routes_and_show_on_a_narrow_terminal_keep_ids_whole(cli: Any) -> None:
    for args in (("routes",), ("route", "show", ROUTE)):
        out = cli(*args, COLUMNS="80", TTY_COMPATIBLE="1", NO_COLOR="1").stdout
        assert LIVE in out and "\u2026" not in out, out


def test_not_a_terminal_prints_tab_separated_columns(cli: Any) -> None:
    out = cli("audit", ROUTE, COLUMNS="40").stdout  # CliRunner: stdout is not a terminal
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    header, *rows = (line.split("\t") for line in lines)
    assert header == ["version", "at (UTC)", "by", "action", "reason", "change"]
    assert len(rows) == 4 and all(len(r) == len(header) for r in rows)
    assert rows[-1][3] == "rollback" and f"live {NEXT} -> {LIVE}" in rows[-1][5]


def test_fit_widths_gives_ids_their_full_width_or_gives_up() -> None:
    listing = Listing([Col("id"), Col("reason", wrap=True)],
                      [[LIVE, "a long reason that can wrap between its words"]])
    widths = fit_widths(listing, 50)
    assert widths is not None and widths[0] == len(LIVE) and sum(widths) + 7 <= 50
    assert widths[1] >= len("between")
    assert fit_widths(listing, 30) is None  # the block layout, not a cut id
