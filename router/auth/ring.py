"""The gateway's in-memory view of the keys: authentication with no I/O on the request path.

The view is loaded at start and re-read from the store in the background when it is older
than ``refresh_s`` (a request finding it stale starts the re-read and goes on with the view
it has), so a key revoked with the CLI is refused on every replica within about
``refresh_s``; one revoked through this gateway's API, at once. A key id the view does not
know is looked for in a view loaded after the request arrived (re-reads for unknown ids
are shared by concurrent requests and at least ``miss_refresh_s`` apart): a key created a
moment ago works on its first request, and a flood of made-up keys costs at most one
store read per ``miss_refresh_s``.

Fail-static: when the store cannot be read, the last view is kept (and the failure logged
once). With no view yet (the store was unreachable since start) every check that needs the
keys answers 503 ``key_store_unavailable`` rather than guess: the gateway never opens
because its key store is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lora_router.router.auth.errors import InvalidApiKey, KeyStoreUnavailable
from lora_router.router.auth.keys import ApiKey, parse_key
from lora_router.router.auth.store import KeyStore, revoke_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyView:
    """Every key the store held when it was read, by id; ``loaded_at``: when that read
    started (monotonic seconds): every key created before then is in it."""

    by_id: Mapping[str, ApiKey]
    loaded_at: float
    active: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", sum(1 for k in self.by_id.values() if k.active))

    @classmethod
    def of(cls, keys: Iterable[ApiKey], at: float) -> KeyView:
        return cls(MappingProxyType({k.id: k for k in keys}), at)


class KeyRing:
    """The keys as this gateway knows them (see the module docstring)."""

    def __init__(
        self, store: KeyStore, *, refresh_s: float = 1.0, miss_refresh_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._refresh_s = refresh_s
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._view: KeyView | None = None
        self._attempted_at = float("-inf")
        self._error: str | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The first load; a store that cannot be read now is retried on use."""
        with contextlib.suppress(KeyStoreUnavailable):  # logged by _load
            async with self._lock:
                await self._load()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()

    async def view(self) -> KeyView:
        """The current view (loaded now if there is none; 503 if that fails)."""
        view = self._view
        if view is None:
            return await self._load_now()
        if self._clock() - self._attempted_at >= self._refresh_s:
            self._refresh_in_background()
        return view

    async def has_keys(self) -> bool:
        """Whether any key was ever created: revoked keys count, so revoking every key
        never turns the gateway back into one that needs none."""
        return len((await self.view()).by_id) > 0

    async def authenticate(self, token: str) -> ApiKey:
        """The active key ``token`` is; :class:`InvalidApiKey` otherwise."""
        asked = self._clock()
        parts = parse_key(token)
        if parts is None:
            raise InvalidApiKey("malformed API key: expected lr_<role>_<id>_<secret>")
        view = await self.view()
        key = view.by_id.get(parts.id)
        if key is None and view.loaded_at < asked:  # created a moment ago?
            key = (await self._reload_since(asked)).by_id.get(parts.id)
        if key is None or key.role != parts.role or not key.matches(token):
            raise InvalidApiKey(f"invalid API key (id {parts.id})")
        if not key.active:
            raise InvalidApiKey(f"API key {key.id} ({key.name}) was revoked at "
                                f"{key.revoked_at:%Y-%m-%d %H:%M:%S} UTC by {key.revoked_by}")
        return key

    async def revoke(self, key_id: str, *, by: str) -> ApiKey:
        """Revoke in the store, and in this gateway's view at once."""
        key = await revoke_key(self.store, key_id, by=by)
        view = self._view
        if view is not None:
            self._view = KeyView.of({**view.by_id, key.id: key}.values(), view.loaded_at)
        return key

    def status(self) -> dict[str, Any]:
        view = self._view
        return {
            "store": self.store.name,
            "loaded": view is not None,
            "keys": len(view.by_id) if view is not None else None,
            "active": view.active if view is not None else None,
            "age_s": round(self._clock() - view.loaded_at, 3) if view is not None else None,
            "error": self._error,
        }

    async def _load_now(self) -> KeyView:
        async with self._lock:
            if self._view is not None:
                return self._view  # loaded while this call waited
            if self._error is not None and self._clock() - self._attempted_at < self._refresh_s:
                raise KeyStoreUnavailable(self._error)  # retried once per refresh_s
            return await self._load()

    async def _reload_since(self, asked: float) -> KeyView:
        """A view whose read started at or after ``asked`` (shared by the callers waiting)."""
        async with self._lock:
            view = self._view
            if view is not None and view.loaded_at >= asked:
                return view
            wait = self._attempted_at + self._miss_refresh_s - self._clock()
            if wait > 0:  # reads for unknown ids stay miss_refresh_s apart
                await asyncio.sleep(wait)
            return await self._load()

    def _refresh_in_background(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            async with self._lock:
                if self._clock() - self._attempted_at >= self._refresh_s:
                    await self._load()
        except KeyStoreUnavailable:
            pass  # logged by _load; the last view stays
        except Exception:  # a background task must never die silently
            log.exception("re-reading the API keys failed")

    async def _load(self) -> KeyView:
        started = self._attempted_at = self._clock()
        try:
            keys = await self.store.all()
        except KeyStoreUnavailable as exc:
            if self._error is None:
                kept = "keeping the last key list" if self._view is not None else "no key list yet"
                log.warning("API key store unavailable (%s): %s", kept, exc.message)
            self._error = exc.message
            raise
        if self._error is not None:
            log.info("API key store readable again (%s)", self.store.location)
        self._error = None
        self._view = KeyView.of(keys, started)
        return self._view
