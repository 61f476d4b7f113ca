"""Cost accounting end to end: requests served by a real gateway (real engine, real writer,
SQLite log) show up in ``lora-router cost``, in the dashboard state's cost section and in
``lora_router_engine_seconds_total`` with the same figures."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from lora_router.ground.home import Home
from lora_router.router.cli.main import app
from lora_router.router.log.factory import sqlite_path
from tests.dashboard.conftest import ROUTE, V1, V2, Gateway, private_home, start_gateway, wait_for

PROMPTS = ["Ticket: I was charged twice for the same invoice.\nCategory:",
           "Ticket: where is my parcel?\nCategory:", "Ticket: reset my password\nCategory:"]
PRICES = {"LORA_ROUTER_PRICE_PER_GPU_HOUR": "3600", "LORA_ROUTER_PRICE_PER_1K_PROMPT_TOKENS": "1",
          "LORA_ROUTER_PRICE_PER_1K_COMPLETION_TOKENS": "", "LORA_ROUTER_PRICE_OVERRIDES": "{}"}


@pytest.fixture(scope="module")
def served(demo_home: Home, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[Gateway, list[dict[str, Any]]]]:
    """A gateway that served three route requests and one pinned one; their bodies."""
    home = private_home(demo_home, tmp_path_factory.mktemp("cost") / "home")
    gw = start_gateway(home, drift_enabled=False, price_per_gpu_hour=3600.0,
                       price_per_1k_prompt_tokens=1.0)
    bodies: list[dict[str, Any]] = [{"engine_before": _engine_seconds(gw)}]
    with gw.client() as c:
        for model, prompt in [(ROUTE, p) for p in PROMPTS] + [(V2, PROMPTS[0])]:
            r = c.post("/v1/completions", json={"model": model, "prompt": prompt,
                                                 "max_tokens": 4})
            assert r.status_code == 200, r.text
            bodies.append(r.json())
    db = sqlite_path(home)

    def logged() -> bool:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM inference_log").fetchone()[0] == 4

    wait_for(logged, "the four requests in the inference log")
    bodies[0]["engine_after"] = _engine_seconds(gw)
    yield gw, bodies
    gw.stop()


def _engine_seconds(gw: Gateway) -> dict[tuple[str, str], float]:
    with gw.client() as c:
        text = c.get("/metrics").text
    return {(s.labels["route"], s.labels["model_id"]): s.value
            for f in text_string_to_metric_families(text)
            if f.name == "lora_router_engine_seconds" for s in f.samples}


def _cli_report(gw: Gateway) -> dict[str, Any]:
    env = {"DATABASE_URL": "", "REDIS_URL": "", **PRICES}
    result = CliRunner().invoke(app, ["cost", "--since", "1h", "--json", "--home",
                                      str(gw.home.root)], env=env)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_cli_cost_matches_what_was_served(served: tuple[Gateway, list[dict[str, Any]]]) -> None:
    gw, bodies = served
    data = _cli_report(gw)
    lines = {(x["model_id"], x["route"]): x for x in data["lines"]}
    assert set(lines) == {(V1, ROUTE), (V2, None)}
    routed, pinned = bodies[1:4], bodies[4]
    v1 = lines[(V1, ROUTE)]
    assert v1["requests"] == 3 and v1["errors"] == 0
    assert v1["prompt_tokens"] == sum(b["usage"]["prompt_tokens"] for b in routed)
    assert v1["completion_tokens"] == sum(b["usage"]["completion_tokens"] for b in routed)
    assert lines[(V2, None)]["prompt_tokens"] == pinned["usage"]["prompt_tokens"]
    for line in lines.values():  # every served request was charged engine time
        assert line["engine_s"] > 0
        assert line["cost"] == pytest.approx(line["engine_s"] + line["prompt_tokens"] / 1000)
    assert data["total"]["requests"] == 4 and data["priced"] is True


def test_engine_seconds_agree_with_metrics(served: tuple[Gateway, list[dict[str, Any]]]) -> None:
    gw, bodies = served
    with sqlite3.connect(sqlite_path(gw.home)) as conn:
        rows = conn.execute("SELECT route, model_id, engine_ms FROM inference_log").fetchall()
    assert all(ms is not None and ms > 0 for *_, ms in rows)
    before, after = bodies[0]["engine_before"], bodies[0]["engine_after"]
    for route, model in ((ROUTE, V1), ("none", V2)):
        logged = sum(ms for r, m, ms in rows if (r or "none", m) == (route, model)) / 1000
        moved = after[(route, model)] - before.get((route, model), 0.0)
        assert moved == pytest.approx(logged, rel=1e-9)


def test_dashboard_state_has_the_cost_section(
        served: tuple[Gateway, list[dict[str, Any]]]) -> None:
    gw, _ = served
    with gw.client() as c:
        r = c.get("/admin/dashboard/state")
    assert r.status_code == 200, r.text
    cost = r.json()["cost"]
    assert cost["window"] == "24h" and cost["available"] and cost["note"] is None
    report = cost["report"]
    cli = _cli_report(gw)
    assert report["lines"] == cli["lines"] and report["total"] == cli["total"]
    with gw.client() as c:
        page = c.get("/dashboard").text
    assert 'id="cost"' in page
