"""The remote engine against real engine servers (``lora-router serve --engine-api``
subprocesses on copies of the demo home), over real HTTP.

Server ``a`` has the default eight adapter slots, server ``b`` one (so that it refuses a
second adapter: a real refusal for the rollback of a partial load). Tests that kill a server
start it again on the same port before they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lora_router.adapters.engine import GenerationRequest, SamplingParams
from lora_router.adapters.remote import NoBackend, RemoteConfig, RemoteEngine
from lora_router.ground.errors import AdapterNotResident, BaseModelMismatch, NoFreeSlot
from lora_router.ground.home import Home
from tests.conftest import free_port
from tests.harness.engine_servers import EngineServer, copy_home, start_servers

V1, V2 = "support-triage@v1", "support-triage@v2"
PROMPT = "Ticket: my card was charged twice\nCategory:"


@pytest.fixture(scope="module")
def servers(demo_home: Home, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[EngineServer, EngineServer]]:
    work = tmp_path_factory.mktemp("engine-servers")
    homes = [copy_home(demo_home.root, work / f"home-{i}") for i in range(2)]
    a, b = start_servers(homes, work, [{}, {"LORA_ROUTER_MAX_ADAPTERS": "1"}])
    yield a, b
    for s in (a, b):
        s.stop()


def _config(urls: list[str], **kw: Any) -> RemoteConfig:
    opts: dict[str, Any] = {"probe_interval_s": 0.2, "probe_timeout_s": 2.0,
                            "load_timeout_s": 60.0, "start_timeout_s": 30.0, **kw}
    return RemoteConfig(backends=tuple(urls), **opts)


async def _engine(home: Home, urls: list[str], **kw: Any) -> RemoteEngine:
    engine = await asyncio.to_thread(RemoteEngine.from_home, home, _config(urls, **kw))
    await engine.start()
    return engine


def _request(adapter_id: str | None = V1, i: int = 0) -> GenerationRequest:
    return GenerationRequest(f"t-{i}", PROMPT, adapter_id, SamplingParams(max_tokens=4))


def _state(engine: RemoteEngine, url: str) -> dict[str, Any]:
    return next(b for b in engine.backends() if b["url"] == url)


async def _until(cond: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_load_reaches_every_backend_and_an_unload_leaves_none(
    demo_home: Home, servers: tuple[EngineServer, EngineServer]
) -> None:
    a, b = servers
    engine = await _engine(demo_home, [a.url, b.url])
    try:
        assert engine.base.name == "tiny-llama-demo"
        info = await engine.load_adapter(V1, demo_home.adapter_dir(V1))
        assert info.rank == 16 and set(engine.resident_adapters()) == {V1}
        assert a.adapters() == b.adapters() == {V1}
        direct = httpx.post(f"{a.url}/v1/completions", json={
            "model": V1, "prompt": PROMPT, "max_tokens": 4, "temperature": 0}).json()
        results = [await engine.generate(_request(V1, i)) for i in range(4)]
        assert {r.text for r in results} == {direct["choices"][0]["text"]}
        assert all(r.adapter_id == V1 and r.completion_tokens >= 1 for r in results)
        assert 0 < results[0].confidence <= 1 and results[0].prompt_tokens == len(
            engine.encode(PROMPT))
        chunks = [c async for c in engine.stream(_request(V1, 9))]
        assert chunks[-1].result is not None
        assert "".join(c.text for c in chunks) == chunks[-1].result.text == results[0].text
        base = await engine.generate(_request(None))
        assert base.adapter_id is None

        await engine.unload_adapter(V1)
        assert engine.resident_adapters() == {}
        assert a.adapters() == b.adapters() == set()
        with pytest.raises(AdapterNotResident):
            await engine.generate(_request(V1))
        with pytest.raises(AdapterNotResident):
            engine.stream(_request(V1))
    finally:
        await engine.close()


async def test_a_load_one_backend_refuses_is_rolled_back_on_the_others(
    demo_home: Home, servers: tuple[EngineServer, EngineServer]
) -> None:
    a, b = servers
    engine = await _engine(demo_home, [a.url, b.url])
    try:
        await engine.load_adapter(V1, demo_home.adapter_dir(V1))
        with pytest.raises(NoFreeSlot):  # b has one slot: it refuses v2
            await engine.load_adapter(V2, demo_home.adapter_dir(V2))
        assert set(engine.resident_adapters()) == {V1}
        assert a.adapters() == b.adapters() == {V1}  # a's copy of v2 was unloaded again
        assert all(s["up"] for s in engine.backends())  # a refusal is not an outage
    finally:
        await engine.close()


@pytest.mark.parametrize("field", ["name", "sha256"])
async def test_a_backend_serving_another_base_is_refused_at_start(
    copy_home: Home, servers: tuple[EngineServer, EngineServer], field: str
) -> None:
    lock = json.loads(copy_home.base_lock.read_text())
    lock[field] = "other-base" if field == "name" else "sha256:" + "0" * 64
    copy_home.base_lock.write_text(json.dumps(lock))
    engine = await asyncio.to_thread(
        RemoteEngine.from_home, copy_home, _config([servers[0].url, servers[1].url]))
    with pytest.raises(BaseModelMismatch, match="pinned"):
        await engine.start()


def _rewriting_proxy(upstream: str, answer_as: str) -> Starlette:
    """A backend that forwards to a real engine server but answers completions as another
    model (what a misrouted or misconfigured backend would do)."""
    client = httpx.AsyncClient(base_url=upstream, timeout=30)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    async def forward(request: Request) -> Response:
        r = await client.request(request.method, request.url.path, content=await request.body(),
                                 headers={"content-type": "application/json"})
        body = r.content
        if request.url.path == "/v1/completions" and r.status_code == 200:
            body = body.replace(b'"model":"' + V1.encode() + b'"',
                                b'"model":"' + answer_as.encode() + b'"')
        return Response(body, r.status_code, media_type=r.headers.get("content-type"))

    paths = ["/health", "/v1/models", "/v1/completions", "/v1/load_lora_adapter",
             "/v1/unload_lora_adapter"]
    return Starlette(routes=[Route(p, forward, methods=["GET", "POST"]) for p in paths],
                     lifespan=lifespan)


@pytest.fixture
def wrong_model_backend(servers: tuple[EngineServer, EngineServer]) -> Iterator[str]:
    """The rewriting proxy in front of server a, served by uvicorn in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_rewriting_proxy(servers[0].url, V2),
                                          host="127.0.0.1", port=port, log_level="warning",
                                          loop="asyncio"))
    thread = threading.Thread(target=server.run, name="wrong-model-backend", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "proxy did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


async def test_an_answer_as_another_adapter_is_never_passed_on(
    demo_home: Home, servers: tuple[EngineServer, EngineServer], wrong_model_backend: str
) -> None:
    alone = await _engine(demo_home, [wrong_model_backend], probe_interval_s=3600)
    try:
        await alone.load_adapter(V1, demo_home.adapter_dir(V1))
        with pytest.raises(NoBackend):
            await alone.generate(_request(V1))
        assert "answered as model 'support-triage@v2'" in _state(alone, wrong_model_backend)[
            "reason"]
    finally:
        await alone.close()
    paired = await _engine(demo_home, [wrong_model_backend, servers[1].url],
                           probe_interval_s=3600)
    try:
        await paired.load_adapter(V1, demo_home.adapter_dir(V1))
        for i in range(4):  # whichever it tries first, the answer is v1's, from b
            assert (await paired.generate(_request(V1, i))).adapter_id == V1
            chunks = [c async for c in paired.stream(_request(V1, 10 + i))]
            assert chunks[-1].result is not None and chunks[-1].result.adapter_id == V1
        assert not _state(paired, wrong_model_backend)["up"]
    finally:
        await paired.close()


async def _load_until(engine: RemoteEngine, n: int) -> list[Exception | str]:
    """``n`` concurrent requests; each outcome's text or exception."""
    async def one(i: int) -> Exception | str:
        try:
            return (await engine.generate(_request(V1, i))).text
        except Exception as exc:
            return exc
    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _busy_on(engine: RemoteEngine, url: str, timeout_s: float = 120.0
                   ) -> asyncio.Task[list[Exception | str]]:
    """A running load of 40 requests with at least one in flight on ``url``: batches are
    sent until one is seen there (a batch can finish between two looks on a fast machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        load = asyncio.create_task(_load_until(engine, 40))
        while not load.done():
            if _state(engine, url)["in_flight"] > 0:
                return load
            await asyncio.sleep(0.005)
        assert [o for o in load.result() if not isinstance(o, str)] == []
        if time.monotonic() > deadline:
            raise AssertionError(f"no request seen in flight on {url}")


async def test_a_restarted_backend_that_lost_its_adapters_is_taken_out_not_used(
    demo_home: Home, servers: tuple[EngineServer, EngineServer]
) -> None:
    a, b = servers
    engine = await _engine(demo_home, [a.url, b.url], probe_interval_s=3600)  # no probe
    try:
        await engine.load_adapter(V1, demo_home.adapter_dir(V1))
        a.kill()
        a.start().wait_ready()  # back, empty, and the engine has not looked
        assert a.adapters() == set()
        outcomes = await _load_until(engine, 12)
        assert [o for o in outcomes if not isinstance(o, str)] == []
        state = _state(engine, a.url)
        assert not state["up"] and "lacks support-triage@v1" in state["reason"]
    finally:
        await engine.close()


async def test_a_killed_backend_is_taken_out_and_readmitted_after_a_resync(
    demo_home: Home, servers: tuple[EngineServer, EngineServer]
) -> None:
    a, b = servers
    engine = await _engine(demo_home, [a.url, b.url])
    try:
        # the engine starts once one backend is in; both must be before the load
        await _until(lambda: all(x["up"] for x in engine.backends()), "both in service")
        await engine.load_adapter(V1, demo_home.adapter_dir(V1))
        load = await _busy_on(engine, a.url)
        a.kill()
        outcomes = await load
        assert [o for o in outcomes if not isinstance(o, str)] == []  # retried on b
        assert not _state(engine, a.url)["up"]
        assert all(isinstance(o, str) for o in await _load_until(engine, 8))

        a.start()
        await _until(lambda: _state(engine, a.url)["up"], "a re-admitted")
        assert a.adapters() == {V1}  # re-synced before it was admitted
        load = await _busy_on(engine, a.url)
        assert all(isinstance(o, str) for o in await load)
    finally:
        await engine.close()


async def test_a_backend_killed_mid_load_is_taken_out_and_the_load_completes(
    demo_home: Home, servers: tuple[EngineServer, EngineServer]
) -> None:
    a, b = servers
    engine = await _engine(demo_home, [a.url, b.url], probe_timeout_s=30.0)
    try:
        b.freeze()  # b accepts the load request and never answers it
        loading = asyncio.create_task(engine.load_adapter(V1, demo_home.adapter_dir(V1)))
        await _until(lambda: V1 in a.adapters(), "a loaded v1")
        assert not loading.done()  # still waiting for b
        b.kill()
        info = await loading
        assert info.adapter_id == V1 and set(engine.resident_adapters()) == {V1}
        assert not _state(engine, b.url)["up"]
        assert all(isinstance(o, str) for o in await _load_until(engine, 8))

        b.start()
        await _until(lambda: _state(engine, b.url)["up"], "b re-admitted")
        assert b.adapters() == {V1}
    finally:
        await engine.close()


async def test_with_no_backend_in_service_the_start_fails_with_503(demo_home: Home) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    engine = await asyncio.to_thread(RemoteEngine.from_home, demo_home,
                                     _config([dead], start_timeout_s=0.3))
    with pytest.raises(NoBackend, match="unreachable") as err:
        await engine.start()
    assert err.value.status_code == 503
