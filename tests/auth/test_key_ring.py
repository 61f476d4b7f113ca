"""The gateway's key view: cached, re-read in the background, fail-static, fail-closed
without a view; a key created a moment ago is found on its first use. Real SQLite store,
a hand-driven clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lora_router.router.auth.errors import InvalidApiKey, KeyStoreUnavailable
from lora_router.router.auth.factory import sqlite_keys_path
from lora_router.router.auth.keys import ApiKey
from lora_router.router.auth.ring import KeyRing
from lora_router.router.auth.roles import Role
from lora_router.router.auth.sqlite_store import SqliteKeyStore
from lora_router.router.auth.store import revoke_key
from tests.auth.conftest import amint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ring_for(home: Path, clock: Clock) -> KeyRing:
    return KeyRing(SqliteKeyStore(sqlite_keys_path(home)), refresh_s=5, clock=clock)


async def eventually_refused(ring: KeyRing, token: str) -> InvalidApiKey:
    deadline = time.monotonic() + 10
    while True:
        try:
            await ring.authenticate(token)
        except InvalidApiKey as exc:
            return exc
        assert time.monotonic() < deadline, "still accepted"
        await asyncio.sleep(0.01)


async def test_a_revocation_is_seen_after_the_refresh_interval(tmp_path: Path) -> None:
    clock = Clock()
    key, token = await amint(tmp_path, Role.APP, "web")
    ring = ring_for(tmp_path, clock)
    await ring.start()
    assert (await ring.authenticate(token)).id == key.id
    await revoke_key(ring.store, key.id, by="cli:ops")  # as the CLI does, elsewhere
    clock.now += 1
    assert (await ring.authenticate(token)).id == key.id  # the view is 1 s old: kept
    clock.now += 5  # older than refresh_s: re-read in the background
    exc = await eventually_refused(ring, token)
    assert "revoked" in exc.message and "cli:ops" in exc.message
    assert await ring.has_keys()  # a revoked key still counts: nothing reopens
    await ring.close()


async def test_a_key_created_after_the_load_is_found_at_once(tmp_path: Path) -> None:
    clock = Clock()
    ring = ring_for(tmp_path, clock)
    await ring.start()
    assert not await ring.has_keys()
    clock.now += 1  # later than miss_refresh_s, well within refresh_s
    _, token = await amint(tmp_path, Role.ONCALL, "ops")
    assert (await ring.authenticate(token)).name == "ops"
    assert await ring.has_keys()
    await ring.close()


async def test_the_last_view_is_kept_while_the_store_cannot_be_read(tmp_path: Path) -> None:
    clock = Clock()
    _, token = await amint(tmp_path, Role.ADMIN, "alice")
    ring = ring_for(tmp_path, clock)
    await ring.start()
    db = sqlite_keys_path(tmp_path)
    good = db.read_bytes()
    db.write_bytes(b"\x00garbage" * 1024)
    clock.now += 10
    deadline = time.monotonic() + 10
    while ring.status()["error"] is None:  # the re-read fails in the background ...
        assert (await ring.authenticate(token)).name == "alice"  # ... the view stays
        assert time.monotonic() < deadline, "no re-read was attempted"
        await asyncio.sleep(0.01)
    assert (await ring.authenticate(token)).name == "alice"
    assert ring.status()["loaded"] is True and "keys.db" in ring.status()["error"]
    db.write_bytes(good)
    clock.now += 10
    while ring.status()["error"] is not None:  # readable again
        await ring.authenticate(token)
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await ring.close()


async def test_without_a_view_an_unreadable_store_fails_closed(tmp_path: Path) -> None:
    db = sqlite_keys_path(tmp_path)
    db.parent.mkdir()
    db.write_bytes(b"\x00garbage" * 1024)
    ring = ring_for(tmp_path, Clock())
    await ring.start()  # tolerated: retried on use
    with pytest.raises(KeyStoreUnavailable):
        await ring.has_keys()
    with pytest.raises(KeyStoreUnavailable):
        await ring.authenticate("lr_app_0123456789ab_" + "0" * 48)
    assert ring.status()["loaded"] is False and ring.status()["error"]
    await ring.close()


async def test_a_malformed_or_unknown_key_is_invalid(tmp_path: Path) -> None:
    ring = ring_for(tmp_path, Clock())
    for token in ("lr_", "lr_app_xyz_123", "lr_root_0123456789ab_" + "0" * 48,
                  "lr_app_0123456789ab_" + "0" * 48):
        with pytest.raises(InvalidApiKey):
            await ring.authenticate(token)
    await ring.close()


async def test_a_key_created_just_after_a_read_is_found_on_its_first_use(
    tmp_path: Path,
) -> None:
    """The read for an unknown id waits out ``miss_refresh_s`` rather than refusing."""
    clock = Clock()
    ring = ring_for(tmp_path, clock)
    await ring.start()  # read at t=1000
    _, token = await amint(tmp_path, Role.APP, "just-now")
    clock.now += 0.01  # well within miss_refresh_s (0.1) of that read
    assert (await ring.authenticate(token)).name == "just-now"
    await ring.close()


class CountingStore(SqliteKeyStore):
    """The real SQLite store, counting its reads."""

    reads = 0

    async def all(self) -> list[ApiKey]:
        self.reads += 1
        return await super().all()


async def test_a_flood_of_unknown_keys_shares_its_reads(tmp_path: Path) -> None:
    await amint(tmp_path, Role.APP, "web")
    store = CountingStore(sqlite_keys_path(tmp_path))
    ring = KeyRing(store, refresh_s=3600)
    await ring.start()
    bogus = [f"lr_app_{i:012x}_{'0' * 48}" for i in range(50)]
    results = await asyncio.gather(*(ring.authenticate(t) for t in bogus),
                                   return_exceptions=True)
    assert all(isinstance(r, InvalidApiKey) for r in results)
    assert store.reads <= 3, store.reads  # the start, then at most two shared re-reads
    await ring.close()
