"""Durable route store in one SQLite file: the embedded default (no Redis).

Route state and audit survive a restart (a rollback stays rolled back). The file is in WAL
mode with ``synchronous=FULL`` (a committed change is on disk before ``put`` returns) and a
busy timeout; every statement runs on one worker thread, never on the event loop. A write
is a compare-and-set on the version inside one ``BEGIN IMMEDIATE`` transaction, with its
audit row, so two processes on one file cannot both win. Reads serve an in-process
:class:`Snapshot`, loaded at start and updated by this process's writes (another process's
write to the same file is seen at the next start, or when a write of ours conflicts with it).

Schema changes are migrations (``PRAGMA user_version``); a file written by a newer version,
or one that is not a route store, fails the start (``FlagStoreUnavailable``) rather than
being replaced: replacing it would bring back whatever ``routes.yaml`` says.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from lora_router.ground.errors import FlagStoreUnavailable, VersionConflict
from lora_router.router.flags import metrics
from lora_router.router.flags.snapshot import Snapshot
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import AuditEntry, Listener, RouteStore, StoreHealth

T = TypeVar("T")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: current state per route, and one audit row per committed version
        "CREATE TABLE routes (route TEXT PRIMARY KEY, version INTEGER NOT NULL, "
        "state TEXT NOT NULL)",
        "CREATE TABLE audit (route TEXT NOT NULL, version INTEGER NOT NULL, "
        "entry TEXT NOT NULL, PRIMARY KEY (route, version)) WITHOUT ROWID",
    ),
)


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():  # the audit names people and their reasons: owner-only
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        have = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if have > len(MIGRATIONS):
            raise sqlite3.DatabaseError(
                f"schema version {have} is newer than this lora-router's {len(MIGRATIONS)}")
        for version, statements in enumerate(MIGRATIONS[have:], start=have + 1):
            for sql in statements:
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _audit_row(new: RouteState, before: RouteState | None, action: str) -> tuple[str, int, str]:
    entry = AuditEntry(route=new.route, version=new.version, at=new.updated_at,
                       by=new.updated_by, reason=new.reason, action=action,
                       before=before, after=new)
    return new.route, new.version, entry.model_dump_json()


class _Db:
    """The statements, on one connection; called on the store's worker thread only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def load(self) -> list[RouteState]:
        rows = self.conn.execute("SELECT state FROM routes").fetchall()
        return [RouteState.model_validate_json(s) for (s,) in rows]

    def _current(self, route: str) -> RouteState | None:
        row = self.conn.execute("SELECT state FROM routes WHERE route = ?", (route,)).fetchone()
        return RouteState.model_validate_json(row[0]) if row else None

    def _write(self, new: RouteState, before: RouteState | None, action: str) -> None:
        self.conn.execute(
            "INSERT INTO routes (route, version, state) VALUES (?, ?, ?) ON CONFLICT (route) "
            "DO UPDATE SET version = excluded.version, state = excluded.state",
            (new.route, new.version, new.model_dump_json()))
        self.conn.execute("INSERT INTO audit (route, version, entry) VALUES (?, ?, ?)",
                          _audit_row(new, before, action))

    def transaction(self, fn: Callable[[], T]) -> T:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return out

    def put(self, new: RouteState, expected: int, action: str) -> RouteState | None:
        """Commit ``new`` iff the stored version is ``expected``; else return what is
        stored (None for no route) and write nothing."""
        def cas() -> tuple[bool, RouteState | None]:
            current = self._current(new.route)
            if (current.version if current else 0) != expected:
                return False, current
            self._write(new, current, action)
            return True, current

        ok, current = self.transaction(cas)
        if not ok:
            raise _Conflict(current)
        return current

    def seed(self, states: list[RouteState]) -> list[RouteState]:
        """Create the routes that do not exist; return the states now stored for all."""
        def create() -> list[RouteState]:
            out = []
            for state in states:
                current = self._current(state.route)
                if current is None:
                    self._write(state, None, "seed")
                out.append(current or state)
            return out

        return self.transaction(create)

    def audit(self, route: str, limit: int) -> list[AuditEntry]:
        rows = self.conn.execute(
            "SELECT entry FROM audit WHERE route = ? ORDER BY version DESC LIMIT ?",
            (route, limit)).fetchall()
        return [AuditEntry.model_validate_json(e) for (e,) in reversed(rows)]


class _Conflict(Exception):
    def __init__(self, current: RouteState | None) -> None:
        super().__init__("version conflict")
        self.current = current


class SqliteRouteStore(RouteStore):
    """Route flags in the SQLite file at ``path`` (see the module docstring)."""

    def __init__(self, path: Path, *, timeout_s: float = 5.0) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._snapshot = Snapshot()
        self._db: _Db | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()  # one change at a time: subscribers see version order

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            raise FlagStoreUnavailable("route store is not started")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            raise FlagStoreUnavailable(f"route store {self.path}: {exc}") from exc
        except ValidationError as exc:  # written by another version of lora-router
            raise FlagStoreUnavailable(
                f"route store {self.path}: a stored route or audit entry is not valid "
                f"here: {exc.errors()[0]['msg']}") from exc

    async def start(self) -> None:
        """Open (create, migrate) the file and load every route; ``FlagStoreUnavailable``
        naming the file when it cannot be opened or is not a route store."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="route-store")
        try:
            conn = await self._run(_connect, self.path, self._timeout_s)
            self._db = _Db(conn)
            for state in await self._run(self._db.load):
                self._snapshot.apply(state)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        db, executor = self._db, self._executor
        self._db = None
        if executor is not None:
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(executor, db.conn.close)
            executor.shutdown(wait=False)
            self._executor = None

    def get(self, route: str) -> RouteState | None:
        return self._snapshot.get(route)

    def all(self) -> dict[str, RouteState]:
        return self._snapshot.all()

    def subscribe(self, fn: Listener) -> None:
        self._snapshot.add_listener(fn)

    def health(self) -> StoreHealth:
        return StoreHealth(backend="sqlite", connected=self._db is not None, last_sync_at=None)

    def _require_db(self) -> _Db:
        if self._db is None:
            raise FlagStoreUnavailable("route store is not started")
        return self._db

    async def seed(self, states: dict[str, RouteState]) -> None:
        db = self._require_db()
        fresh = [s.model_copy(update={"version": 1}) for s in states.values()]
        async with self._lock:
            for state in await self._run(db.seed, fresh):
                self._snapshot.apply(state)

    async def put(
        self, state: RouteState, expected_version: int, action: str = "set"
    ) -> RouteState:
        db = self._require_db()
        new = state.model_copy(
            update={"version": expected_version + 1, "updated_at": datetime.now(UTC)}
        )
        async with self._lock:
            try:
                await self._run(db.put, new, expected_version, action)
            except _Conflict as exc:
                metrics.FLAGS_WRITES.labels("conflict").inc()
                if exc.current is not None:  # another process wrote it: catch up
                    self._snapshot.apply(exc.current)
                found = exc.current.version if exc.current else 0
                raise VersionConflict(
                    f"route {new.route!r} is at version {found}, not {expected_version}",
                    route=new.route, expected=expected_version, found=found,
                ) from None
            metrics.FLAGS_WRITES.labels("ok").inc()
            if self._snapshot.apply(new):
                metrics.FLAGS_APPLIED.labels("local").inc()
        return new

    async def audit(self, route: str, limit: int = 1000) -> list[AuditEntry]:
        return await self._run(self._require_db().audit, route, limit)
