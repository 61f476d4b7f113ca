"""The engine contract for adapters: load validates first and is idempotent, slots are
counted, unload drains in-flight requests then frees, and other adapters never notice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from lora_router.ground.errors import (
    AdapterIncompatible,
    AdapterNotFound,
    AdapterNotResident,
    NoFreeSlot,
)
from tests.engine.contract.broken import BROKEN
from tests.engine.contract.conftest import Expect, Open, load, req
from tests.engine.contract.engines import Opened
from tests.engine.oracle import PROMPTS
from tests.engine.tiny import TinyHome


async def test_load_returns_the_adapters_info_and_makes_it_resident(opened: Opened) -> None:
    engine, paths = opened
    assert engine.resident_adapters() == {}
    info = await engine.load_adapter("alpha@v1", paths["alpha@v1"])
    assert info.adapter_id == "alpha@v1"
    assert Path(info.path) == paths["alpha@v1"]
    assert info.rank == 4 and tuple(info.target_modules) == ("q_proj", "v_proj")
    assert engine.resident_adapters() == {"alpha@v1": info}


async def test_loading_a_resident_id_again_returns_its_info(opened: Opened) -> None:
    engine, paths = opened
    first = await engine.load_adapter("beta@v1", paths["beta@v1"])
    again = await engine.load_adapter("beta@v1", paths["beta@v1"])
    assert again == first
    assert list(engine.resident_adapters()) == ["beta@v1"]


@pytest.mark.parametrize("make", BROKEN, ids=lambda f: f.__name__)
async def test_an_incompatible_adapter_is_refused_and_nothing_is_half_loaded(
    open_engine: Open,
    tiny: TinyHome,
    tmp_path: Path,
    expect: Expect,
    make: Callable[[Path, Path, Path], Path],
) -> None:
    async with open_engine(max_adapters=2) as (engine, paths):
        await load(engine, paths, "alpha@v1")
        before = engine.resident_adapters()
        bad = make(paths["alpha@v1"], tiny.home.base_dir, tmp_path)
        with pytest.raises(AdapterIncompatible):
            await engine.load_adapter("bad@v1", bad)
        assert engine.resident_adapters() == before
        with pytest.raises(AdapterNotResident):
            await engine.generate(req("bad@v1"))
        # the id is not stuck and no slot leaked: it loads from a good adapter, then the
        # two slots are full
        await engine.load_adapter("bad@v1", paths["gamma@v1"])
        assert (await engine.generate(req("bad@v1"))).text == expect("gamma@v1", PROMPTS[0], 12)
        with pytest.raises(NoFreeSlot):
            await engine.load_adapter("beta@v1", paths["beta@v1"])
        assert (await engine.generate(req("alpha@v1"))).text == expect("alpha@v1", PROMPTS[0], 12)


async def test_a_missing_adapter_directory_is_not_found(opened: Opened, tmp_path: Path) -> None:
    engine, _ = opened
    with pytest.raises(AdapterNotFound):
        await engine.load_adapter("ghost@v1", tmp_path / "nope")
    assert engine.resident_adapters() == {}


async def test_no_free_slot_when_every_slot_is_taken(open_engine: Open, expect: Expect) -> None:
    async with open_engine(max_adapters=2) as (engine, paths):
        await load(engine, paths, "alpha@v1", "beta@v1")
        with pytest.raises(NoFreeSlot):
            await engine.load_adapter("gamma@v1", paths["gamma@v1"])
        assert set(engine.resident_adapters()) == {"alpha@v1", "beta@v1"}
        for a in ("alpha@v1", "beta@v1"):
            assert (await engine.generate(req(a))).text == expect(a, PROMPTS[0], 12)
        await engine.unload_adapter("alpha@v1")
        await engine.load_adapter("gamma@v1", paths["gamma@v1"])  # the freed slot
        assert set(engine.resident_adapters()) == {"beta@v1", "gamma@v1"}


async def test_unload_drains_in_flight_requests_then_frees_the_slot(
    open_engine: Open, expect: Expect
) -> None:
    async with open_engine(max_adapters=2) as (engine, paths):
        await load(engine, paths, "alpha@v1", "beta@v1")
        stream = engine.stream(req("beta@v1", PROMPTS[3], max_tokens=60))
        first = await stream.__anext__()  # decoding now
        unload = asyncio.ensure_future(engine.unload_adapter("beta@v1"))
        while True:  # admitted until the unload begins; from then on refused
            assert not unload.done(), "beta@v1 was admitted until its unload had finished"
            try:
                await engine.generate(req("beta@v1", max_tokens=1))
            except AdapterNotResident:
                break
        assert not unload.done(), "the unload returned before its in-flight request ended"
        rest = [c async for c in stream]
        final = rest[-1].result
        assert final is not None and final.finish_reason in ("length", "stop")
        text = first.text + "".join(c.text for c in rest)
        assert text == final.text == expect("beta@v1", PROMPTS[3], 60)  # served to the end
        await asyncio.wait_for(unload, 60)
        assert set(engine.resident_adapters()) == {"alpha@v1"}
        with pytest.raises(AdapterNotResident):
            await engine.generate(req("beta@v1"))
        await engine.load_adapter("gamma@v1", paths["gamma@v1"])  # the slot is free
        assert (await engine.generate(req("gamma@v1"))).text == expect("gamma@v1", PROMPTS[0], 12)


async def test_unloading_an_unknown_adapter_is_a_no_op(opened: Opened) -> None:
    engine, paths = opened
    await load(engine, paths, "alpha@v1")
    await engine.unload_adapter("ghost@v1")
    await engine.unload_adapter("alpha@v1")
    await engine.unload_adapter("alpha@v1")  # already gone
    assert engine.resident_adapters() == {}


async def test_other_adapters_keep_serving_while_adapters_load_and_unload(
    opened: Opened, expect: Expect
) -> None:
    engine, paths = opened
    await load(engine, paths, "alpha@v1")
    want = expect("alpha@v1", PROMPTS[1], 8)
    stop = asyncio.Event()
    served: list[str] = []

    async def serve_alpha() -> None:
        while not stop.is_set():
            served.append((await engine.generate(req("alpha@v1", PROMPTS[1], 8))).text)

    async def churn() -> None:
        try:
            for _ in range(3):
                for adapter_id in ("beta@v1", "gamma@v1"):
                    await engine.load_adapter(adapter_id, paths[adapter_id])
                    draining = asyncio.ensure_future(
                        engine.generate(req(adapter_id, PROMPTS[3], 40))
                    )
                    res = await engine.generate(req(adapter_id))
                    assert res.text == expect(adapter_id, PROMPTS[0], 12)
                    await engine.unload_adapter(adapter_id)  # alpha keeps going meanwhile
                    assert (await draining).text == expect(adapter_id, PROMPTS[3], 40)
        finally:
            stop.set()

    await asyncio.gather(churn(), serve_alpha(), serve_alpha(), serve_alpha())
    assert len(served) >= 3
    assert set(served) == {want}  # no failure, and every answer unchanged
    assert set(engine.resident_adapters()) == {"alpha@v1"}
