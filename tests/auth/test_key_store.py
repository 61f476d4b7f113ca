"""The key store contract, against every backend: SQLite (the home) and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lora_router.router.auth.errors import InvalidKeyName, KeyNotFound, KeyStoreUnavailable
from lora_router.router.auth.factory import build_key_store
from lora_router.router.auth.keys import hash_key, parse_key
from lora_router.router.auth.pg_store import PostgresKeyStore
from lora_router.router.auth.roles import Role
from lora_router.router.auth.sqlite_store import SqliteKeyStore
from lora_router.router.auth.store import KeyStore, create_key, revoke_key
from lora_router.router.settings import Settings
from tests.conftest import free_port


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        s: KeyStore = build_key_store(Settings(home=tmp_path, database_url=url))
        assert isinstance(s, PostgresKeyStore)
    else:
        s = build_key_store(Settings(home=tmp_path))
        assert isinstance(s, SqliteKeyStore) and s.path == tmp_path / "auth" / "keys.db"
    yield s
    await s.close()


async def test_no_store_yet_lists_nothing_and_creates_nothing(
    store: KeyStore, tmp_path: Path
) -> None:
    assert await store.all() == []
    assert not (tmp_path / "auth").exists()
    with pytest.raises(KeyNotFound):
        await revoke_key(store, "0123456789ab", by="t")


async def test_create_list_revoke(store: KeyStore) -> None:
    alice, token = await create_key(store, role=Role.ONCALL, name="alice", by="cli:root")
    bob, _ = await create_key(store, role=Role.APP, name="bob", by="cli:root")
    parts = parse_key(token)
    assert parts is not None and parts == (Role.ONCALL, alice.id)
    assert alice.key_hash == hash_key(token) and alice.matches(token)
    listed = await store.all()
    assert [(k.id, k.name, k.role, k.active) for k in listed] == [
        (alice.id, "alice", Role.ONCALL, True), (bob.id, "bob", Role.APP, True)]
    assert listed[0].created_at == alice.created_at
    revoked = await revoke_key(store, alice.id, by="key:admin")
    assert not revoked.active and revoked.revoked_by == "key:admin"
    again = await revoke_key(store, alice.id, by="someone-else")
    assert again.revoked_at == revoked.revoked_at and again.revoked_by == "key:admin"
    assert [k.active for k in await store.all()] == [False, True]
    with pytest.raises(KeyNotFound):
        await revoke_key(store, "ffffffffffff", by="t")
    with pytest.raises(KeyNotFound):
        await revoke_key(store, "not an id", by="t")


async def test_a_bad_name_is_refused_before_anything_is_stored(store: KeyStore) -> None:
    for name in ("", "a b", "x" * 65, "../up", "tab\there"):
        with pytest.raises(InvalidKeyName):
            await create_key(store, role=Role.APP, name=name, by="t")
    assert await store.all() == []


async def test_an_unreachable_store_raises_key_store_unavailable(tmp_path: Path) -> None:
    dead = PostgresKeyStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout_s=3)
    with pytest.raises(KeyStoreUnavailable):
        await dead.all()
    await dead.close()
    db = tmp_path / "keys.db"
    db.write_bytes(b"\x00garbage" * 512)
    with pytest.raises(KeyStoreUnavailable):
        await SqliteKeyStore(db).all()
