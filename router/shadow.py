"""Shadow copies: a served request, sent again to the route's shadow adapter in the background.

:class:`BackgroundShadow` implements :class:`router.completions.ShadowDispatcher`. Contract:

- ``submit`` returns at once and never raises. It either schedules the copy as an asyncio
  task on the running loop, or drops it. The copy is a new request (``<primary id>-shadow``,
  the same prompt and sampling params; always non-streamed, even when the primary was
  streamed) on ``decision.shadow_adapter``; its output is recorded, never returned.
- Dropped, never queued, when the copy would compete with the requests that clients wait
  for: ``max_inflight`` copies already running (``inflight_limit``), the engine reporting
  itself saturated (``engine_saturated``), ``max_inflight == 0`` (``disabled``), after
  ``close()`` (``closed``), or on an unexpected error while scheduling (``error``). Each drop
  is counted in ``lora_router_shadow_dropped_total{reason}`` and in :attr:`dropped`.
  A dropped copy was never attempted, so it has no log row.
- Every scheduled copy produces exactly one record through ``recorder`` (``build_record``
  with ``arm="shadow"``, ``parent_request_id`` = the primary's id, ``model_id`` = the shadow
  adapter, the primary's route, flag version and policy version, and its client prompt;
  the copy sends the engine the primary's prompt, the route's policy applied): status
  ``ok`` with its output, or
  ``error`` when the engine refused or failed it (not resident any more, overloaded,
  timed out after ``timeout_s``).
- ``close()`` stops admitting copies, waits up to ``close_grace_s`` for the running ones,
  then cancels the rest; a cancelled copy is recorded too, as an error
  (``ShadowCancelled``), so no attempted copy disappears. Call it before the log writer's
  ``close()`` (a record arriving after that still goes to the writer's spool).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Gauge

from lora_router.adapters.engine import GenerationRequest, GenerationResult
from lora_router.ground.errors import EngineTimeout
from lora_router.router.completions import Recorder, build_record
from lora_router.router.routing import Decision

log = logging.getLogger(__name__)

SUBMITTED = Counter("lora_router_shadow_submitted_total", "Shadow copies scheduled")
DROPPED = Counter(
    "lora_router_shadow_dropped_total",
    "Shadow copies dropped instead of scheduled",
    ["reason"],  # inflight_limit | engine_saturated | disabled | closed | error
)
FINISHED = Counter(
    "lora_router_shadow_finished_total", "Shadow copies finished (and recorded)", ["status"]
)
INFLIGHT = Gauge("lora_router_shadow_inflight", "Shadow copies running now")


@dataclass(frozen=True, slots=True)
class _Record:
    """What a copy's record takes from its primary."""

    parent_id: str
    decision: Decision  # route, flag version and policy version: the primary's
    route_key: str | None
    subject: str | None
    prompt: str  # the client's prompt (the copy's own is the primary's, policy applied)


class ShadowCancelled(Exception):
    """A shadow copy was cancelled before it finished (the gateway shut down)."""


class ShadowEngine(Protocol):
    """What the dispatcher needs of the engine (``adapters.engine.Engine`` provides it)."""

    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def saturated(self) -> bool: ...


class BackgroundShadow:
    """Runs shadow copies as background tasks, bounded by ``max_inflight`` (see module doc)."""

    def __init__(
        self,
        engine: ShadowEngine,
        recorder: Recorder,
        *,
        base_model_id: str,
        max_inflight: int,
        timeout_s: float,
        close_grace_s: float = 5.0,
    ) -> None:
        if max_inflight < 0:
            raise ValueError(f"max_inflight must be >= 0, got {max_inflight}")
        self.engine = engine
        self._recorder = recorder
        self._base = base_model_id
        self.max_inflight = max_inflight
        self._timeout_s = timeout_s
        self._grace_s = close_grace_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.submitted = 0
        self.dropped: Tally[str] = Tally()  # reason -> copies dropped by this dispatcher

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    # -- the request path ------------------------------------------------------------------
    def submit(
        self,
        primary: GenerationRequest,
        decision: Decision,
        route_key: str | None,
        *,
        subject: str | None = None,
        prompt: str | None = None,
    ) -> None:
        """Schedule a copy of ``primary`` on ``decision.shadow_adapter``, or drop it."""
        try:
            reason = self._drop_reason(decision)
            if reason is not None:
                self._drop(reason)
                return
            adapter = decision.shadow_adapter
            assert adapter is not None
            copy = GenerationRequest(
                f"{primary.request_id}-shadow", primary.prompt, adapter, primary.params,
                prompt_ids=primary.prompt_ids,
            )
            record = _Record(primary.request_id, decision, route_key, subject,
                             primary.prompt if prompt is None else prompt)
            coro = self._run(copy, record)
            task = asyncio.get_running_loop().create_task(coro, name=copy.request_id)
        except Exception:  # never fail the primary over its shadow
            log.exception("could not schedule the shadow copy of %s", primary.request_id)
            self._drop("error")
            return
        self._tasks.add(task)
        task.add_done_callback(self._done)
        self.submitted += 1
        SUBMITTED.inc()
        INFLIGHT.inc()

    def _drop_reason(self, decision: Decision) -> str | None:
        if self._closing:
            return "closed"
        if self.max_inflight == 0:
            return "disabled"
        if decision.shadow_adapter is None:
            return "error"
        if len(self._tasks) >= self.max_inflight:
            return "inflight_limit"
        if self.engine.saturated():
            return "engine_saturated"
        return None

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        DROPPED.labels(reason).inc()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        INFLIGHT.dec()

    # -- the copy --------------------------------------------------------------------------
    async def _run(self, copy: GenerationRequest, of: _Record) -> None:
        started = time.perf_counter()

        def record(
            result: GenerationResult | None = None, error: BaseException | None = None
        ) -> None:
            rec = build_record(
                request_id=copy.request_id,
                prompt=of.prompt,
                model_id=copy.adapter_id or self._base,
                base_model_id=self._base,
                decision=of.decision,
                started=started,
                route_key=of.route_key,
                result=result,
                error=error,
                parent_request_id=of.parent_id,
                arm="shadow",
                subject=of.subject,
            )
            FINISHED.labels(rec.status).inc()
            try:
                self._recorder(rec)
            except Exception:  # a broken recorder must not kill the task
                log.exception("recorder failed for shadow copy %s", copy.request_id)

        try:
            async with asyncio.timeout(self._timeout_s):
                result = await self.engine.generate(copy)
        except asyncio.CancelledError:
            record(error=ShadowCancelled("shadow copy cancelled before it finished"))
            raise
        except TimeoutError:
            record(error=EngineTimeout(f"shadow copy timed out after {self._timeout_s:g} s"))
        except Exception as exc:  # recorded as a failed row; the primary is long served
            record(error=exc)
        else:
            record(result=result)

    # -- shutdown --------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop admitting; wait up to ``close_grace_s`` for running copies, cancel the rest
        (each cancelled copy is recorded as an error)."""
        self._closing = True
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._grace_s)
        if pending:
            log.warning("cancelling %d shadow copies still running at shutdown", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
