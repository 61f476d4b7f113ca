"""The demo scenario (``lora-router demo run``): a bad canary caught and dropped by the guard.

On a copy of a demo home (never the home itself: the copy holds only its base, adapters,
registry, data and routes file), on the embedded defaults (the copy's SQLite route store
and SQLite inference log), :func:`run_scenario`

1. starts the real gateway in this process, on a free loopback port, over real HTTP;
2. through the admin API, as actor ``demo``: a guard policy on ``support-triage``
   (auto-rollback, ``language=es`` protected), then ``support-triage@v2`` as a canary at
   ``percent`` % beside ``support-triage@v1`` live;
3. replays the held-out test tickets of v1's dataset (English and Spanish, reshuffled each
   pass by the seed) through the official ``openai`` client, one at a time, each with its
   own sticky route key, and posts each answer's ground truth to ``POST /v1/feedback``
   (``was_correct``; ``failure_cluster`` ``<true label>-><predicted label>``);
4. stops when a response shows the route changed and ``GET /v1/models/support-triage``
   shows no canary any more (or after ``max_requests``), sends ``tail`` more requests to
   show they are all answered by v1, and stops the gateway;
5. reads what happened from the copy's log database and route store (the alert and its
   evidence, the guard's action, the incident), and writes the incident's report
   (:func:`router.drift.report.incident_report`).

Deterministic by seed: the same tickets in the same order with the same route keys (so the
same requests reach the canary), the same greedy answers, the same labels in the same order,
hence the same alert evidence. Wall-clock times, and how many requests were sent before the
monitor's next round saw the alarming label, vary from run to run.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from lora_router.demo.task import format_prompt, parse_label
from lora_router.ground.errors import ConfigError, LoraRouterError
from lora_router.ground.home import Home
from lora_router.registry.store import RegistryStore
from lora_router.router.drift.events import Alert, Incident
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.drift.report import incident_report
from lora_router.router.drift.runtime import build_drift_store
from lora_router.router.flags.client import HttpClient
from lora_router.router.flags.factory import build_route_store
from lora_router.router.flags.store import AuditEntry
from lora_router.router.settings import Settings

ROUTE = "support-triage"
V1, V2 = "support-triage@v1", "support-triage@v2"
ACTOR = "demo"
HOME_PARTS = ("base", "base.lock.json", "adapters", "registry", "data", "routes.yaml")
MAX_TOKENS = 5  # as the demo's held-out evaluation (demo.evaluate)
Progress = Callable[[str], None]


class ScenarioFailed(LoraRouterError):
    """The demo's gateway answered a request or a feedback with an error."""

    code = "demo_failed"


@dataclass(frozen=True)
class ScenarioConfig:
    seed: int = 7
    max_requests: int = 3000  # the bound: no detection by then is a failed demo
    percent: float = 20.0
    tail: int = 20  # requests after the drop, to show v1 answers them all
    drift_interval_s: float = 0.5  # the monitor's round (the gateway's default is 1.0)
    # the guard's minimum evidence: enough labels of the canary (about 45 % of them Spanish)
    # that the incident's assessment has the ten Spanish ones it needs to name the slice
    min_labels: int = 40


@dataclass
class Ticket:
    text: str
    label: str
    language: str


@dataclass
class Sent:
    """One replayed request, as the client saw it."""

    index: int  # 1-based
    request_id: str
    language: str
    arm: str
    model_id: str
    flag_version: int
    correct: bool
    at: float  # time.time() after its feedback was acknowledged


@dataclass
class ScenarioResult:
    run_dir: Path
    home: Path
    url: str
    config: ScenarioConfig
    tickets: int
    sent: list[Sent] = field(default_factory=list)
    started_at: float = 0.0
    canary_version: int = 0
    dropped_after: int | None = None  # requests sent when the client saw the drop
    dropped_seen_at: float | None = None
    alerts: list[Alert] = field(default_factory=list)
    incident: Incident | None = None
    audit: list[AuditEntry] = field(default_factory=list)
    live_after: str | None = None
    report: Path | None = None
    failing_line: str | None = None

    @property
    def detected(self) -> bool:
        return self.dropped_after is not None and self.incident is not None

    @property
    def tail(self) -> list[Sent]:
        return [] if self.dropped_after is None else self.sent[self.dropped_after:]


# -- the home ------------------------------------------------------------------------------

def copy_demo_home(home: Home, dst: Path) -> Home:
    """The parts of a demo home the scenario needs, copied to ``dst`` (no log, no route
    store, no keys: the copy starts as `demo build` left it)."""
    _check_demo_home(home)
    dst.mkdir(parents=True)
    for part in HOME_PARTS:
        src = home.root / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns(".lock"))
        else:
            shutil.copy2(src, dst / part)
    return Home.at(dst)


def _check_demo_home(home: Home) -> None:
    missing = [p for p in HOME_PARTS if not (home.root / p).exists()]
    if missing or not all(home.model_card_path(a).is_file() for a in (V1, V2)):
        raise ConfigError(f"{home.root} is not a demo home (missing {', '.join(missing) or V2});"
                          f" build one with `lora-router demo build --home {home.root}`")


def load_tickets(home: Home) -> list[Ticket]:
    """The held-out test split of v1's training dataset."""
    dataset = RegistryStore(home).get_model_card(V1).trained_on
    path = home.dataset_dir(dataset) / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [Ticket(r["text"], r["label"], r["language"]) for r in rows]


def replay_order(n: int, total: int, seed: int) -> list[int]:
    """``total`` indexes into ``n`` tickets: passes over all of them, each pass shuffled."""
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < total:
        batch = list(range(n))
        rng.shuffle(batch)
        out += batch
    return out[:total]


def demo_settings(home: Home, port: int, config: ScenarioConfig) -> Settings:
    """The embedded defaults, whatever the environment says about stores and access."""
    return Settings(
        home=home.root, host="127.0.0.1", port=port, redis_url=None, database_url=None,
        routes_file=None, flags_db=None, admin_token=None, api_key=None,
        require_app_key=False, drift_enabled=True, drift_interval_s=config.drift_interval_s,
        drift_webhook_url=None, replica_id="demo", input_store_enabled=False,
        torch_threads=1,  # a tiny model: more threads only contend for the cores
    )


# -- the gateway in a thread -----------------------------------------------------------------

class _Gateway:
    """The real app served by uvicorn on its own event loop, in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        from lora_router.router.app import create_app

        config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.url = f"http://{settings.host}:{settings.port}"
        self.thread = threading.Thread(target=self.server.run, name="demo-gateway",
                                       daemon=True)

    def start(self, timeout_s: float = 180.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError("the demo gateway did not start (see the log above)")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(120)


# -- the run ---------------------------------------------------------------------------------

def run_scenario(home: Home, run_dir: Path, config: ScenarioConfig | None = None, *,
                 port: int = 0, progress: Progress | None = None) -> ScenarioResult:
    """Run the scenario on a copy of ``home`` under ``run_dir`` (see the module docstring)."""
    config = config or ScenarioConfig()
    say = progress or (lambda _msg: None)
    copy = copy_demo_home(home, run_dir / "home")
    tickets = load_tickets(copy)
    settings = demo_settings(copy, port or _free_port(), config)
    gateway = _Gateway(settings)
    say(f"starting the gateway on {gateway.url} (home: a copy in {copy.root})")
    gateway.start()
    result = ScenarioResult(run_dir, copy.root, gateway.url, config, len(tickets))
    try:
        asyncio.run(_drive(result, tickets, say))
    finally:
        gateway.stop()
    asyncio.run(_gather(result, settings, copy))
    return result


async def _drive(result: ScenarioResult, tickets: list[Ticket], say: Progress) -> None:
    from openai import AsyncOpenAI

    cfg = result.config
    async with httpx.AsyncClient(base_url=result.url, timeout=60) as http, \
            AsyncOpenAI(base_url=f"{result.url}/v1", api_key="unused", max_retries=0,
                        timeout=60) as client:
        result.canary_version = await _set_up(HttpClient(http, ACTOR), cfg)
        say(f"route {ROUTE}: live {V1}, canary {V2} at {cfg.percent:g}% (version"
            f" {result.canary_version}), guard auto-rollback protecting language=es")
        order = replay_order(len(tickets), cfg.max_requests + cfg.tail, cfg.seed)
        result.started_at = time.time()
        limit = cfg.max_requests
        for i, t in enumerate(order, start=1):
            if i > limit:
                break
            result.sent.append(await _one(client, http, tickets[t], i, cfg.seed))
            if i % 100 == 0:
                say(f"{i} requests sent and labelled")
            if result.dropped_after is None and await _dropped(client, result):
                result.dropped_after, result.dropped_seen_at = i, time.time()
                say(f"canary dropped: seen after {i} requests")
                limit = i + cfg.tail


async def _dropped(client: Any, result: ScenarioResult) -> bool:
    """The last response came from a newer route version, and the route has no canary."""
    if result.sent[-1].flag_version <= result.canary_version:
        return False
    model = await client.models.retrieve(ROUTE)
    return getattr(model, "canary", None) is None


async def _set_up(admin: HttpClient, cfg: ScenarioConfig) -> int:
    state = await admin.show(ROUTE)
    if state.live != V1:
        await admin.change(ROUTE, "set-live", adapter=V1, reason="demo: start from v1")
    policy = GuardPolicy(auto_rollback=True, protect=("language=es",), min_labels=cfg.min_labels)
    await admin.set_guard(ROUTE, policy, reason="demo: guard the Spanish slice of the canary")
    out = await admin.change(ROUTE, "canary", adapter=V2, percent=cfg.percent,
                             reason=f"demo: canary {V2} at {cfg.percent:g}%")
    return out.state.version


async def _one(client: Any, http: httpx.AsyncClient, ticket: Ticket, i: int,
               seed: int) -> Sent:
    from openai import APIError

    try:
        raw = await client.completions.with_raw_response.create(
            model=ROUTE, prompt=format_prompt(ticket.text), max_tokens=MAX_TOKENS,
            temperature=0, extra_headers={"x-route-key": f"demo-{seed}-{i}"})
        completion = raw.parse()
        predicted = parse_label(completion.choices[0].text)
        correct = predicted == ticket.label
        body = {"request_id": completion.id, "was_correct": correct,
                "failure_cluster": None if correct else f"{ticket.label}->{predicted or 'none'}"}
        (await http.post("/v1/feedback", json=body)).raise_for_status()
    except (APIError, httpx.HTTPStatusError) as exc:
        raise ScenarioFailed(f"request {i}: {exc}") from exc
    h = raw.headers
    return Sent(i, completion.id, ticket.language, h["x-route-arm"], h["x-model-id"],
                int(h["x-flag-version"]), correct, time.time())


async def _gather(result: ScenarioResult, settings: Settings, home: Home) -> None:
    """What the log database and the route store recorded; the incident's report."""
    store = build_drift_store(settings, home)
    routes = build_route_store(settings)
    await store.open()
    await routes.start()
    try:
        found = await store.incidents(route=ROUTE)  # newest first
        mine = [i for i in found if i.model_id == V2]
        result.incident = mine[0] if mine else (found[0] if found else None)
        if result.incident is not None:
            ids = result.incident.alert_ids
            result.alerts = [a for i in ids if (a := await store.alert(i)) is not None]
        result.audit = await routes.audit(ROUTE, 100)
        state = routes.get(ROUTE)
        result.live_after = state.live if state is not None else None
        if result.incident is not None:
            files = await incident_report(store, home, result.incident.id, routes=routes)
            result.report, result.failing_line = files.markdown, files.failing_line
    finally:
        await routes.close()
        await store.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_run_dir(home: Home, now: datetime | None = None) -> Path:
    """``<home>/demo-runs/<UTC time>``."""
    return home.root / "demo-runs" / f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}"


