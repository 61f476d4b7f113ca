"""The embedded durable route store: what the contract suite cannot show (restarts, other
processes on the same file, bad files), and that it is the embedded default."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lora_router.ground.errors import ConfigError, FlagStoreUnavailable, VersionConflict
from lora_router.ground.home import Home
from lora_router.router.flags.factory import (
    build_route_store,
    check_routes_file,
    sqlite_route_names,
)
from lora_router.router.flags.sqlite_store import SqliteRouteStore
from lora_router.router.settings import Settings
from tests.flags.conftest import canary_state, make_state


async def _started(path: Path) -> SqliteRouteStore:
    store = SqliteRouteStore(path)
    await store.start()
    return store


async def test_state_and_audit_survive_a_restart_and_seeding_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "flags" / "routes.db"
    first = await _started(path)
    await first.seed({"support": make_state()})
    changed = await first.put(canary_state().model_copy(update={"reason": "try v2"}), 1,
                              "canary")
    await first.close()

    again = await _started(path)
    try:
        await again.seed({"support": make_state(live="support@v9")})  # the routes file again
        assert again.get("support") == changed
        assert [(e.version, e.action, e.reason) for e in await again.audit("support")] == [
            (1, "seed", "initial"), (2, "canary", "try v2")]
        with pytest.raises(VersionConflict):
            await again.put(make_state(), 1)
        assert (await again.put(make_state(), 2, "rollback")).version == 3
    finally:
        await again.close()
    assert path.stat().st_mode & 0o777 == 0o600  # the audit names people and reasons
    assert sqlite_route_names(path) == {"support"}


async def test_a_write_by_another_process_is_a_conflict_that_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "routes.db"
    ours, theirs = await _started(path), await _started(path)
    try:
        await ours.seed({"support": make_state()})
        await theirs.seed({"support": make_state()})  # exists: keeps version 1
        seen: list[int] = []
        ours.subscribe(lambda s: seen.append(s.version))
        won = await theirs.put(make_state(live="support@v2"), 1)
        with pytest.raises(VersionConflict) as info:
            await ours.put(make_state(live="support@v3"), 1)
        assert info.value.detail["found"] == 2
        assert ours.get("support") == won and seen == [2]
    finally:
        await ours.close()
        await theirs.close()


async def test_a_file_that_is_not_a_route_store_fails_the_start_naming_it(
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "routes.db"
    garbage.write_bytes(b"not a database at all, " * 100)
    with pytest.raises(FlagStoreUnavailable, match=r"routes\.db"):
        await _started(garbage)
    assert garbage.read_bytes().startswith(b"not a database")  # never replaced

    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(FlagStoreUnavailable, match="schema version 99 is newer"):
        await _started(newer)


def test_the_embedded_default_is_the_sqlite_file_of_the_routes_table(tmp_path: Path) -> None:
    home = tmp_path / "home"
    default = Settings(home=home, redis_url=None)
    store = build_route_store(default)
    assert isinstance(store, SqliteRouteStore)
    assert store.path == home.resolve() / "flags" / "routes.db"
    same = Settings(home=home, redis_url=None, routes_file=home / "routes.yaml")
    assert same.flags_db_path == default.flags_db_path
    other = Settings(home=home, redis_url=None, routes_file=tmp_path / "what-if.yaml")
    assert other.flags_db_path == (tmp_path / "what-if.db").resolve()
    explicit = Settings(home=home, redis_url=None, flags_db=tmp_path / "x" / "r.db")
    assert explicit.flags_db_path == (tmp_path / "x" / "r.db").resolve()


async def test_serve_checks_only_the_routes_the_store_does_not_hold(tmp_path: Path) -> None:
    """A route the store holds already is not created from the routes file again, so the
    file naming an adapter that was retired since does not stop a restart."""
    home = tmp_path / "home"
    (home / "registry" / "models").mkdir(parents=True)
    (home / "routes.yaml").write_text("routes:\n  support:\n    live: support@v1\n")
    settings = Settings(home=home, redis_url=None)
    with pytest.raises(ConfigError, match="support@v1"):  # no such card: refused
        check_routes_file(settings, Home.at(home))
    store = await _started(settings.flags_db_path)
    await store.seed({"support": make_state()})
    await store.close()
    check_routes_file(settings, Home.at(home))  # held by the store: nothing to create
