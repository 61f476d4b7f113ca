"""Cost accounting per ``model_id`` and route, from the inference log.

The log is the source of truth: one row per request (shadow copies included: they use the
engine too), with its prompt and completion tokens and ``engine_ms``, the request's share
of the engine's forward passes (each pass's wall time split equally among the rows it
computed; see :mod:`adapters.batcher`). So the engine seconds of all requests add up to the
time the engine spent computing, and a request that shared its batch with 31 others is
charged a 32nd of each pass it was in. Queueing, adapter loads and idle time are charged to
no one; failed requests carry no tokens or engine time (NULL), but are counted.

The estimated cost of a group is ``engine_s / 3600 * price_per_gpu_hour +
prompt_tokens / 1000 * price_per_1k_prompt_tokens + completion_tokens / 1000 *
price_per_1k_completion_tokens``, each price taken from the adapter's ``price_overrides``
entry, else the gateway-wide setting; an unset price counts 0; no price set at all for an
adapter: its cost is None (unknown, not free).

The aggregation runs in the database (``GROUP BY model_id, route``: a few rows however many
requests), through any :class:`LogQuery` (``router.dashboard.reader``'s readers: SQLite or
PostgreSQL, ``?`` placeholders).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field

from lora_router.router.settings import Prices, Settings


class LogQuery(Protocol):
    """Read access to the inference-log database (``router.dashboard.reader.LogReader``)."""

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def has_table(self, table: str) -> bool: ...

    def ts(self, value: datetime) -> Any: ...


class PriceBook:
    """The prices of each adapter: its ``price_overrides`` entry over the gateway-wide ones."""

    def __init__(self, default: Prices, overrides: Mapping[str, Prices] | None = None) -> None:
        self.default = default
        self.overrides = dict(overrides or {})

    @classmethod
    def of(cls, settings: Settings) -> PriceBook:
        return cls(settings.prices, settings.price_overrides)

    def prices(self, model_id: str) -> Prices:
        own = self.overrides.get(model_id)
        if own is None:
            return self.default
        merged = self.default.model_dump()
        merged.update(own.model_dump(exclude_none=True))
        return Prices(**merged)

    @property
    def configured(self) -> bool:
        """Whether any price is set (else every cost is None)."""
        return _any_price(self.default) or any(_any_price(p) for p in self.overrides.values())

    def cost(self, model_id: str, engine_s: float, prompt_tokens: int,
             completion_tokens: int) -> float | None:
        p = self.prices(model_id)
        if not _any_price(p):
            return None
        return ((p.price_per_gpu_hour or 0.0) * engine_s / 3600.0
                + (p.price_per_1k_prompt_tokens or 0.0) * prompt_tokens / 1000.0
                + (p.price_per_1k_completion_tokens or 0.0) * completion_tokens / 1000.0)


def _any_price(p: Prices) -> bool:
    return any(v is not None for v in p.model_dump().values())


class CostLine(BaseModel):
    """The requests of one adapter on one route (``route`` None: pinned or base requests)."""

    model_id: str
    route: str | None
    requests: int = Field(description="Every request logged, shadow copies and errors included.")
    errors: int
    shadow: int = Field(description="Of the requests, shadow copies.")
    prompt_tokens: int
    completion_tokens: int
    engine_s: float = Field(description="Seconds of engine forward passes charged to them.")
    cost: float | None = Field(description="Estimated cost (None: no price configured).")


class CostReport(BaseModel):
    """Cost per model_id and route since ``since`` (``route``: the filter, if any)."""

    since: datetime
    route: str | None
    currency: str
    priced: bool = Field(description="Whether any price is configured.")
    lines: list[CostLine]
    total: CostLine = Field(description="The sum of the lines (model_id 'total').")


def _sql(route: str | None) -> str:
    return (
        "SELECT model_id, route, COUNT(*),"
        " SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN arm = 'shadow' THEN 1 ELSE 0 END),"
        " COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
        " COALESCE(SUM(engine_ms), 0)"
        " FROM inference_log WHERE served_at >= ?"
        + (" AND route = ?" if route is not None else "")
        + " GROUP BY model_id, route"
    )


async def cost_report(
    db: LogQuery, prices: PriceBook, *, since: datetime, route: str | None = None,
    currency: str = "USD",
) -> CostReport:
    """Requests, tokens, engine seconds and estimated cost per model_id and route."""
    rows: list[tuple[Any, ...]] = []
    if await db.has_table("inference_log"):
        args: list[Any] = [db.ts(since)] + ([route] if route is not None else [])
        rows = await db.fetch(_sql(route), args)
    lines = sorted((_line(r, prices) for r in rows), key=lambda x: (x.model_id, x.route or ""))
    return CostReport(since=since, route=route, currency=currency, priced=prices.configured,
                      lines=lines, total=_total(lines))


def _line(r: Sequence[Any], prices: PriceBook) -> CostLine:
    model_id, route = str(r[0]), r[1]
    prompt, completion, engine_s = int(r[5] or 0), int(r[6] or 0), float(r[7] or 0) / 1000.0
    return CostLine(model_id=model_id, route=route, requests=int(r[2]), errors=int(r[3] or 0),
                    shadow=int(r[4] or 0), prompt_tokens=prompt, completion_tokens=completion,
                    engine_s=engine_s, cost=prices.cost(model_id, engine_s, prompt, completion))


def _total(lines: Sequence[CostLine]) -> CostLine:
    costs = [x.cost for x in lines if x.cost is not None]
    return CostLine(
        model_id="total", route=None,
        requests=sum(x.requests for x in lines), errors=sum(x.errors for x in lines),
        shadow=sum(x.shadow for x in lines),
        prompt_tokens=sum(x.prompt_tokens for x in lines),
        completion_tokens=sum(x.completion_tokens for x in lines),
        engine_s=sum(x.engine_s for x in lines), cost=sum(costs) if costs else None,
    )
