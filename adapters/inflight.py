"""Admitted requests of an engine that hands them to a scheduler of its own (vLLM).

The embedded engine counts rows in its batcher; an engine whose scheduler queues without
bound and knows nothing of our adapters needs the same three answers from this ledger:
is the queue full (``EngineOverloaded``), is an adapter still in use (drain before unload),
and which requests to fail when an unload outlasts its drain or the engine closes.
Everything runs on the serving event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from lora_router.ground.errors import EngineOverloaded, LoraRouterError


@dataclass(eq=False)
class Ticket:
    """One admitted request, held until it ends; ``failed`` is set to make it stop early."""

    adapter_id: str | None
    queued: bool  # counted against max_queue
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    error: LoraRouterError | None = None

    def fail(self, err: LoraRouterError) -> None:
        self.error = self.error or err
        self.failed.set()


class InFlight:
    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.queued = 0
        self._tickets: set[Ticket] = set()
        self._running: dict[str | None, int] = {}
        self._drained: dict[str, asyncio.Event] = {}

    def admit(self, adapter_id: str | None, queued: bool = True) -> Ticket:
        """Count a request in; ``EngineOverloaded`` when ``max_queue`` are already in."""
        if queued and self.queued >= self.max_queue:
            raise EngineOverloaded(f"engine queue is full ({self.max_queue} requests)")
        t = Ticket(adapter_id, queued)
        self._tickets.add(t)
        self.queued += queued
        self._running[adapter_id] = self._running.get(adapter_id, 0) + 1
        return t

    def release(self, t: Ticket) -> None:
        """Count a request out (again is a no-op); wakes a drain waiting on its adapter."""
        if t not in self._tickets:
            return
        self._tickets.discard(t)
        self.queued -= t.queued
        self._running[t.adapter_id] -= 1
        event = self._drained.get(t.adapter_id) if t.adapter_id is not None else None
        if event is not None and not self._running[t.adapter_id]:
            event.set()

    def running(self, adapter_id: str | None) -> int:
        return self._running.get(adapter_id, 0)

    async def drain(self, adapter_id: str, timeout_s: float) -> bool:
        """Wait until no admitted request uses ``adapter_id``; False after ``timeout_s``."""
        if not self.running(adapter_id):
            return True
        event = self._drained.setdefault(adapter_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            self._drained.pop(adapter_id, None)
        return not self.running(adapter_id)

    def fail(self, err: LoraRouterError, adapter_id: str | None = None, every: bool = False) -> int:
        """Fail the requests of ``adapter_id`` (or ``every`` one); returns how many."""
        hit = [t for t in self._tickets if every or t.adapter_id == adapter_id]
        for t in hit:
            t.fail(err)
        return len(hit)
