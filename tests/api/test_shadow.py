"""Shadow copies over real HTTP on the demo model: recorded, never returned, never waited for,
dropped and counted when saturated.

The copies go through a gate (the real engine behind an ``asyncio.Event``) so that "the
primary does not wait for its shadow" is checked by order, not by timing: the primary's
response arrives while its copy is provably still held at the gate.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from lora_router.adapters.engine import Engine, GenerationRequest, GenerationResult, SamplingParams
from lora_router.adapters.factory import build_engine
from lora_router.ground.home import Home
from lora_router.router.completions import Recorder
from lora_router.router.engine_spec import engine_spec
from lora_router.router.log.record import InferenceRecord, hash_input, hash_route_key
from lora_router.router.log.rows import RowBuilder
from lora_router.router.routing import Decision
from lora_router.router.settings import Settings
from lora_router.router.shadow import BackgroundShadow
from tests.conftest import free_port
from tests.log.gateway import adapter_ids, live_gateway, prompt_for, write_routes

ROUTE = "support-triage"


class GatedEngine:
    """The real engine; shadow copies wait at ``gate`` before they reach it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.gate = asyncio.Event()
        self.waiting = 0

    def saturated(self) -> bool:
        return self.engine.saturated()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.waiting += 1
        await self.gate.wait()
        return await self.engine.generate(request)


def gated_shadow(holder: dict[str, GatedEngine], max_inflight: int):  # type: ignore[no-untyped-def]
    def build(engine: Engine, recorder: Recorder) -> BackgroundShadow:
        holder["gated"] = GatedEngine(engine)
        return BackgroundShadow(
            holder["gated"],
            recorder,
            base_model_id=engine.base.name,
            max_inflight=max_inflight,
            timeout_s=60,
        )

    return build


def _settings(home: Home, tmp_path: Path, **kw: object) -> Settings:
    v1, v2 = adapter_ids(home)
    routes = write_routes(
        tmp_path / "routes.yaml", {ROUTE: {"live": v1, "shadow": {"adapter": v2, "percent": 100}}}
    )
    return Settings(home=home.root, port=free_port(), routes_file=routes, database_url=None, **kw)


def _body(i: int, **kw: object) -> dict[str, object]:
    return {"model": ROUTE, "prompt": prompt_for(i), "max_tokens": 4, "temperature": 0, **kw}


async def _wait_for(pred, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("lora_router_shadow_dropped_total", {"reason": reason}) or 0.0


async def _stream(client: httpx.AsyncClient, body: dict[str, object]) -> tuple[httpx.Response, str]:
    """A streamed completion, read to the end: the response and the text it carried."""
    parts: list[str] = []
    async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                parts += [c["text"] for c in json.loads(line[6:])["choices"]]
    return r, "".join(parts)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_shadow_copy_is_recorded_not_returned_and_not_waited_for(
    demo_home: Home, tmp_path: Path, stream: bool
) -> None:
    v1, v2 = adapter_ids(demo_home)
    records: list[InferenceRecord] = []
    holder: dict[str, GatedEngine] = {}
    settings = _settings(demo_home, tmp_path)
    async with (
        live_gateway(settings, recorder=records.append, shadow=gated_shadow(holder, 8)) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as client,
    ):
        assert gw.shadow is not None
        if stream:
            r, text = await _stream(client, _body(1))
        else:
            r = await client.post("/v1/completions", json=_body(1))
            assert r.status_code == 200, r.text
            text = r.json()["choices"][0]["text"]
        rid = r.headers["x-request-id"]
        assert r.headers["x-model-id"] == v1 and r.headers["x-route-arm"] == "live"

        # the primary's response is here while its copy is held at the gate
        await _wait_for(lambda: holder["gated"].waiting == 1)
        assert gw.shadow.inflight == 1
        assert [x.request_id for x in records] == [rid], "only the primary is recorded yet"

        holder["gated"].gate.set()
        await _wait_for(lambda: len(records) == 2)
        pinned = await client.post("/v1/completions", json={**_body(1), "model": v2})
        assert pinned.status_code == 200, pinned.text

    primary, shadow = records[0], records[1]
    assert primary.output == text and primary.arm == "live" and primary.model_id == v1
    assert shadow.request_id == f"{rid}-shadow"
    assert shadow.arm == "shadow" and shadow.model_id == v2 and shadow.status == "ok"
    assert shadow.parent_request_id == rid and primary.parent_request_id is None
    assert shadow.route == ROUTE and shadow.flag_version == int(r.headers["x-flag-version"])
    rows = [RowBuilder().build(x)[0] for x in (primary, shadow)]
    assert rows[1]["input_hash"] == rows[0]["input_hash"] == hash_input(primary.prompt or "")
    assert rows[1]["route_key_hash"] == rows[0]["route_key_hash"] is not None
    # the copy ran on v2 with the same prompt and params (greedy: same text as a pinned call)
    assert shadow.output == pinned.json()["choices"][0]["text"]
    assert gw.shadow.dropped == {} and gw.shadow.submitted == 1


async def test_saturated_shadow_copies_are_dropped_and_counted_primaries_all_succeed(
    demo_home: Home, tmp_path: Path
) -> None:
    v1, _ = adapter_ids(demo_home)
    n = 8
    records: list[InferenceRecord] = []
    holder: dict[str, GatedEngine] = {}
    before = _dropped("inflight_limit")
    async with (
        live_gateway(
            _settings(demo_home, tmp_path), recorder=records.append, shadow=gated_shadow(holder, 1)
        ) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as client,
    ):
        assert gw.shadow is not None
        rs = await asyncio.gather(
            *(client.post("/v1/completions", json=_body(i)) for i in range(n))
        )
        assert all(r.status_code == 200 and r.headers["x-model-id"] == v1 for r in rs)
        # the first copy holds the only place (gated) until every primary is served
        assert gw.shadow.submitted == 1 and gw.shadow.dropped == {"inflight_limit": n - 1}
        assert _dropped("inflight_limit") - before == n - 1
        metrics = (await client.get("/metrics")).text
        assert 'lora_router_shadow_dropped_total{reason="inflight_limit"}' in metrics
        holder["gated"].gate.set()
        await _wait_for(lambda: gw.shadow is not None and gw.shadow.inflight == 0)

    primaries = [x for x in records if x.arm == "live"]
    shadows = [x for x in records if x.arm == "shadow"]
    assert sorted(x.request_id for x in primaries) == sorted(r.headers["x-request-id"] for r in rs)
    assert all(x.status == "ok" for x in records)
    assert len(shadows) == 1 and shadows[0].parent_request_id in {x.request_id for x in primaries}


async def test_copies_are_dropped_while_the_engine_is_saturated(demo_home: Home) -> None:
    """Engine saturation is real here: the engine's worker is held busy, two requests fill
    its batch of two, and a copy offered meanwhile is dropped; once they finish, one runs."""
    v1, v2 = adapter_ids(demo_home)
    settings = Settings(home=demo_home.root, database_url=None, max_batch_size=2, torch_threads=1)
    engine = await asyncio.to_thread(build_engine, engine_spec(settings), demo_home)
    await engine.start()
    records: list[InferenceRecord] = []
    shadow = BackgroundShadow(
        engine, records.append, base_model_id=engine.base.name, max_inflight=8, timeout_s=60
    )
    release = threading.Event()
    try:
        for a in (v1, v2):
            await engine.load_adapter(a, demo_home.adapter_dir(a))
        blocked = engine._batcher.call(lambda: release.wait(30))  # type: ignore[attr-defined]
        params = SamplingParams(max_tokens=4)
        busy = [
            asyncio.create_task(engine.generate(GenerationRequest(f"busy-{i}", "hi", v1, params)))
            for i in range(2)
        ]
        await _wait_for(engine.saturated, timeout=10)
        decision = Decision(ROUTE, "live", v1, 3, v2)
        primary = GenerationRequest("p-1", prompt_for(1), v1, params)
        shadow.submit(primary, decision, None)
        assert shadow.dropped == {"engine_saturated": 1} and shadow.inflight == 0

        release.set()
        await asyncio.wrap_future(blocked)
        await asyncio.gather(*busy)
        assert not engine.saturated()
        shadow.submit(primary, decision, "k")
        assert shadow.inflight == 1
        await shadow.close()
    finally:
        release.set()
        await engine.close()
    assert [(r.request_id, r.arm, r.model_id, r.status) for r in records] == [
        ("p-1-shadow", "shadow", v2, "ok")
    ]
    assert records[0].flag_version == 3 and records[0].route_key == "k"
    assert RowBuilder().build(records[0])[0]["route_key_hash"] == hash_route_key("k")


async def test_close_records_cancelled_copies_and_refuses_new_ones(demo_home: Home) -> None:
    """A copy still running when the grace ends is cancelled and recorded as an error."""
    v1, v2 = adapter_ids(demo_home)
    settings = Settings(home=demo_home.root, database_url=None, torch_threads=1)
    engine = await asyncio.to_thread(build_engine, engine_spec(settings), demo_home)
    await engine.start()
    records: list[InferenceRecord] = []
    gated = GatedEngine(engine)  # never opened: the copy cannot finish
    shadow = BackgroundShadow(
        gated,
        records.append,
        base_model_id=engine.base.name,
        max_inflight=4,
        timeout_s=60,
        close_grace_s=0.05,
    )
    primary = GenerationRequest("p-2", "hello", v1, SamplingParams())
    try:
        shadow.submit(primary, Decision(ROUTE, "live", v1, 1, v2), None)
        await _wait_for(lambda: gated.waiting == 1)
        await shadow.close()
        shadow.submit(primary, Decision(ROUTE, "live", v1, 1, v2), None)
    finally:
        await engine.close()
    assert shadow.dropped == {"closed": 1} and shadow.inflight == 0
    assert [(r.request_id, r.arm, r.status, r.parent_request_id) for r in records] == [
        ("p-2-shadow", "shadow", "error", "p-2")
    ]
    assert records[0].error is not None and "ShadowCancelled" in records[0].error


def test_zero_max_inflight_disables_shadowing() -> None:
    shadow = BackgroundShadow(
        object(),
        print,
        base_model_id="b",
        max_inflight=0,
        timeout_s=1,  # type: ignore[arg-type]
    )
    shadow.submit(GenerationRequest("p", "x"), Decision("r", "live", "a@v1", 1, "a@v2"), None)
    assert shadow.dropped == {"disabled": 1} and shadow.submitted == 0
