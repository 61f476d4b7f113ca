"""``GET /metrics`` over real HTTP, parsed with prometheus-client's parser: per-model_id
series exist and move when requests are served (a route request on v1, a pinned request
on v2, errors), the histograms are consistent, and no label takes a value outside the known
set after requests for garbage model names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lora_router.ground.home import Home
from tests.dashboard.conftest import ROUTE, V1, V2, Gateway, private_home, start_gateway

BASE = "tiny-llama-demo"
PROMPT = "Ticket: I was charged twice for the same invoice.\nCategory:"
GARBAGE = ["no-such-model", 'evil"label\\n{x="1"}', "support-triage@v9", "x" * 200,
           "../../etc/passwd", "Support-Triage"]
ARMS = {"live", "canary", "shadow", "pinned", "base", "unknown"}
REQUEST_FAMILIES = ("lora_router_requests", "lora_router_request_errors",
                    "lora_router_request_latency_seconds", "lora_router_prompt_tokens",
                    "lora_router_completion_tokens", "lora_router_engine_seconds")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def gateway(demo_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Route support-triage (live v1); v2 registered, loaded on demand when pinned."""
    home = private_home(demo_home, tmp_path_factory.mktemp("metrics") / "home")
    gw = start_gateway(home, drift_enabled=False)
    yield gw
    gw.stop()


def scrape(gw: Gateway) -> tuple[Samples, list[Any]]:
    with gw.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(r.text))
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in families for s in f.samples}
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def complete(c: httpx.Client, model: str, prompt: str = PROMPT) -> httpx.Response:
    return c.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 3})


def test_series_per_model_id_move_when_requests_are_served(gateway: Gateway) -> None:
    before, _ = scrape(gateway)
    with gateway.client() as c:
        routed = complete(c, ROUTE)
        pinned = complete(c, V2)
        too_long = complete(c, ROUTE, "word " * 600)  # over the context: fails in the engine
    assert routed.status_code == 200 and routed.headers["x-model-id"] == V1
    assert pinned.status_code == 200 and pinned.headers["x-model-id"] == V2
    assert too_long.status_code == 400
    after, families = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    live = {"route": ROUTE, "model_id": V1, "arm": "live"}
    pin = {"route": "none", "model_id": V2, "arm": "pinned"}
    assert delta("lora_router_requests_total", **live) == 2
    assert delta("lora_router_request_errors_total", **live) == 1
    assert delta("lora_router_requests_total", **pin) == 1
    assert delta("lora_router_request_errors_total", **pin) == 0
    assert delta("lora_router_request_latency_seconds_count", **live) == 1  # served only
    assert delta("lora_router_request_latency_seconds_count", **pin) == 1
    assert delta("lora_router_request_latency_seconds_sum", **live) > 0
    usage = routed.json()["usage"]
    assert delta("lora_router_prompt_tokens_total", route=ROUTE, model_id=V1) == \
        usage["prompt_tokens"]
    assert delta("lora_router_completion_tokens_total", route=ROUTE, model_id=V1) == \
        usage["completion_tokens"]
    assert delta("lora_router_prompt_tokens_total", route="none", model_id=V2) == \
        pinned.json()["usage"]["prompt_tokens"]
    assert delta("lora_router_engine_seconds_total", route=ROUTE, model_id=V1) > 0
    assert delta("lora_router_engine_seconds_total", route="none", model_id=V2) > 0
    # the pinned request loaded v2: one more load, timed, and v2 resident
    assert delta("lora_router_adapter_loads_total", outcome="ok") == 1
    assert delta("lora_router_adapter_load_seconds_count") == 1
    assert value(after, "lora_router_adapter_resident", model_id=V1) == 1
    assert value(after, "lora_router_adapter_resident", model_id=V2) == 1
    assert value(after, "lora_router_adapters_resident") == 2
    assert_histograms_consistent(families)


def assert_histograms_consistent(families: list[Any]) -> None:
    """Buckets cumulative and ordered; the +Inf bucket equals _count; _sum not negative."""
    seen = 0
    for f in families:
        if f.type != "histogram":
            continue
        series: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}
        for s in f.samples:
            key = frozenset((k, v) for k, v in s.labels.items() if k != "le")
            part = series.setdefault(key, {"buckets": []})
            if s.name.endswith("_bucket"):
                part["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                part["count"] = s.value
            elif s.name.endswith("_sum"):
                part["sum"] = s.value
        for part in series.values():
            bounds = [le for le, _ in part["buckets"]]
            counts = [n for _, n in part["buckets"]]
            assert bounds == sorted(bounds) and bounds[-1] == float("inf"), f.name
            assert counts == sorted(counts), f"{f.name}: buckets not cumulative"
            assert counts[-1] == part["count"] and part["sum"] >= 0, f.name
            seen += 1
    assert seen >= 3


def test_garbage_model_names_never_become_label_values(gateway: Gateway) -> None:
    before, _ = scrape(gateway)
    with gateway.client() as c:
        for name in GARBAGE:
            r = complete(c, name)
            assert r.status_code in (400, 404, 422), (name, r.status_code)
        r = c.post("/v1/chat/completions", json={
            "model": "chat-garbage", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404
    after, families = scrape(gateway)
    other = {"route": "none", "model_id": "other", "arm": "unknown"}
    moved = (value(after, "lora_router_request_errors_total", **other)
             - value(before, "lora_router_request_errors_total", **other))
    assert moved == len(GARBAGE) + 1
    known_models = {V1, V2, BASE, "other"}
    for f in families:
        if not f.name.startswith(REQUEST_FAMILIES):
            continue
        for s in f.samples:
            # other tests in this process register adapters of their own (support-triage@v3)
            assert s.labels["model_id"] in known_models or (
                s.labels["model_id"] not in {*GARBAGE, "chat-garbage"}
                and "@" in s.labels["model_id"]), s
            # the registry is the process's: other tests' gateways add their own routes
            assert s.labels["route"] not in {*GARBAGE, "chat-garbage"}, s
            if "arm" in s.labels:
                assert s.labels["arm"] in ARMS, s
    text = httpx.get(f"{gateway.url}/metrics").text
    for name in GARBAGE:
        assert f'"{name}"' not in text


def test_flag_version_and_staleness_per_route(gateway: Gateway) -> None:
    samples, _ = scrape(gateway)
    assert value(samples, "lora_router_route_flag_version", route=ROUTE) == 1
    assert value(samples, "lora_router_route_snapshot_age_seconds", route=ROUTE) == 0
    with gateway.client() as c:
        r = c.post(f"/admin/routes/{ROUTE}/canary", json={
            "adapter": V2, "percent": 10, "reason": "metrics test"})
        assert r.status_code == 200, r.text
    samples, _ = scrape(gateway)
    assert value(samples, "lora_router_route_flag_version", route=ROUTE) == 2


def test_log_queue_and_spool_gauges_are_exported(gateway: Gateway) -> None:
    samples, _ = scrape(gateway)
    for name in ("lora_router_log_queue_depth", "lora_router_log_spool_pending",
                 "lora_router_log_spool_segments"):
        assert (name, frozenset()) in samples, name
