"""One server speaking vLLM's OpenAI protocol, as the remote engine sees it.

A :class:`Backend` is its HTTP client and what the engine knows of it: whether it is in
service, the adapters loaded there, its requests in flight. Every call raises either
:data:`TRANSPORT` (the backend did not answer: it is taken out of service by the caller) or
a project error mapped from the backend's error answer (:func:`engine_protocol.error_of`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from lora_router.adapters import engine_protocol as wire
from lora_router.ground import errors
from lora_router.ground.errors import LoraRouterError

# The backend did not answer (refused, reset, timed out, cut off): take it out of service.
TRANSPORT: tuple[type[Exception], ...] = (httpx.TransportError,)

_LOAD_FALLBACK: dict[int, type[LoraRouterError]] = {
    400: errors.AdapterIncompatible, 404: errors.AdapterNotFound,
    422: errors.AdapterIncompatible, 500: errors.AdapterIncompatible,
    503: errors.NoFreeSlot,
}
_COMPLETION_FALLBACK: dict[int, type[LoraRouterError]] = {
    400: errors.InvalidRequest, 404: errors.AdapterNotResident, 413: errors.LimitExceeded,
    422: errors.InvalidRequest, 429: errors.EngineOverloaded, 503: errors.EngineOverloaded,
    504: errors.EngineTimeout,
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float
    request_s: float
    load_s: float
    probe_s: float


@dataclass(eq=False)
class Backend:
    """One backend server; ``adapters`` is what the engine loaded there (its view)."""

    url: str
    client: httpx.AsyncClient
    timeouts: Timeouts
    up: bool = False
    reason: str = "not checked yet"  # why it is out of service
    adapters: set[str] = field(default_factory=set)
    in_flight: int = 0
    epoch: int = 0  # bumped by every load/unload on it (a probe's listing may be stale)
    down_since: float = field(default_factory=time.monotonic)

    @classmethod
    def open(cls, url: str, timeouts: Timeouts, api_key: str | None) -> Backend:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        client = httpx.AsyncClient(
            base_url=url, headers=headers,
            timeout=httpx.Timeout(timeouts.request_s, connect=timeouts.connect_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        return cls(url, client, timeouts)

    def take_out(self, reason: str) -> bool:
        """Out of service (True when it was in service)."""
        was_up = self.up
        self.up, self.reason = False, reason
        if was_up:
            self.down_since = time.monotonic()
        return was_up

    # -- probes --------------------------------------------------------------------
    async def healthy(self) -> bool:
        r = await self.client.get(wire.HEALTH_PATH, timeout=self.timeouts.probe_s)
        return r.status_code == 200

    async def cards(self) -> list[dict[str, Any]]:
        r = await self.client.get(wire.MODELS_PATH, timeout=self.timeouts.probe_s)
        if r.status_code != 200:
            raise wire.error_of(r.status_code, r.content, {}, f"{self.url} /v1/models")
        return wire.model_cards(r.json())

    # -- adapters ------------------------------------------------------------------
    async def load(self, name: str, path: str) -> None:
        """Load ``name``; an answer that refuses it is accepted when the backend lists it
        with this path all the same (vLLM refuses a name it has loaded already)."""
        r = await self.client.post(wire.LOAD_PATH, json={"lora_name": name, "lora_path": path},
                                   timeout=self.timeouts.load_s)
        if r.status_code == 200:
            return
        err = wire.error_of(r.status_code, r.content, _LOAD_FALLBACK,
                            f"{self.url} refused to load {name}")
        if r.status_code == 400 and any(
            c["id"] == name and c.get("root") == path for c in await self.cards()
        ):
            return
        raise err

    async def unload(self, name: str) -> None:
        """Unload ``name``; one the backend does not have (404) counts as unloaded."""
        r = await self.client.post(wire.UNLOAD_PATH, json={"lora_name": name},
                                   timeout=self.timeouts.load_s)
        if r.status_code not in (200, 404):
            raise wire.error_of(r.status_code, r.content, {},
                                f"{self.url} failed to unload {name}")

    # -- completions ---------------------------------------------------------------
    async def complete(self, body: dict[str, Any], request_id: str) -> wire.Tally:
        r = await self.client.post(wire.COMPLETIONS_PATH, json=body,
                                   headers={"x-request-id": request_id})
        if r.status_code != 200:
            raise completion_error(self.url, r.status_code, r.content)
        tally = wire.Tally()
        tally.add(r.json())
        return tally

    @asynccontextmanager
    async def events(self, body: dict[str, Any], request_id: str
                     ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The stream's events (parsed ``data:`` payloads up to ``[DONE]``); an error answer
        before the stream raises here, an error event inside it raises from the iterator."""
        async with self.client.stream("POST", wire.COMPLETIONS_PATH, json=body,
                                      headers={"x-request-id": request_id}) as r:
            if r.status_code != 200:
                raise completion_error(self.url, r.status_code, await r.aread())
            yield _events(self.url, r)

    async def close(self) -> None:
        await self.client.aclose()


async def _events(url: str, r: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in r.aiter_lines():
        data = wire.sse_data(line)
        if data is None or not data:
            continue
        if data == wire.DONE:
            return
        payload = json.loads(data)
        if isinstance(payload, dict) and "error" in payload:
            err = payload["error"]
            code = err.get("code") if isinstance(err, dict) else None
            raise completion_error(url, code if isinstance(code, int) else 500, data)
        yield payload
    raise httpx.RemoteProtocolError(f"{url} ended the stream without [DONE]")


def completion_error(url: str, status: int, body: bytes | str) -> LoraRouterError:
    return wire.error_of(status, body, _COMPLETION_FALLBACK, f"backend {url}")


def lacks_model(exc: LoraRouterError) -> bool:
    """The backend answered that it does not have the model asked for: it is out of step
    with the adapters the engine loaded there (restarted, or an unload it missed)."""
    return isinstance(exc, errors.ModelNotFound | errors.AdapterNotResident)
