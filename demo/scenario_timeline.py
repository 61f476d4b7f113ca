"""What ``lora-router demo run`` prints: the scenario's timeline, from its result.

Times are seconds since the first replayed request (``t=+12.3s``), from the wall clock of
this machine: the route's audit (set-up, the guard's change), the alert (when the monitor
raised it, its evidence, and which request's label made the test cross its threshold),
when the client first saw the canary gone, the incident, and the requests after it.
"""

from __future__ import annotations

from typing import Any

from lora_router.demo.scenario import V1, V2, ScenarioResult, Sent
from lora_router.router.drift.events import Alert
from lora_router.router.flags.store import AuditEntry

_PAD = " " * 12
_MAX_REASON = 90


def accuracy_table(result: ScenarioResult) -> list[tuple[str, str, int, float | None]]:
    """(model, language, requests, accuracy) as the client measured them."""
    out = []
    for model in (V1, V2):
        for lang in ("en", "es"):
            rows = [s for s in result.sent if s.model_id == model and s.language == lang]
            acc = sum(s.correct for s in rows) / len(rows) if rows else None
            out.append((model, lang, len(rows), acc))
    return out


def alarming(result: ScenarioResult, alert: Alert) -> Sent | None:
    """The request whose label made the alert's test cross its threshold (the last one of
    its evidence window)."""
    window = alert.evidence.get("window") or {}
    return _sent(result, window.get("to_request"))


def _sent(result: ScenarioResult, request_id: Any) -> Sent | None:
    return next((s for s in result.sent if s.request_id == request_id), None)


def _at(result: ScenarioResult, when: float) -> str:
    return f"t={when - result.started_at:+7.1f}s"


def _alert_lines(result: ScenarioResult, alert: Alert) -> list[str]:
    ev = alert.evidence
    first = _sent(result, (ev.get("window") or {}).get("from_request"))
    last = alarming(result, alert)
    fired = alert.created_at.timestamp()
    by_then = sum(1 for s in result.sent if s.at <= fired)
    return [
        f"DETECT  alert #{alert.id}: {alert.signal} {alert.detector} on {alert.model_id}"
        f" ({alert.arm}); {by_then} requests sent by then",
        f"{_PAD}evidence: {alert.n} labels in its window (requests #{_no(first)} to"
        f" #{_no(last)}), {ev.get('wrong')} wrong: accuracy {_f(alert.estimate)} (95% CI"
        f" {_ci(ev.get('ci95'))}) vs gate bar {_f(alert.baseline)} ({ev.get('gate')}); CUSUM"
        f" {_f(alert.statistic)} >= threshold {_f(alert.threshold)}",
        f"{_PAD}the label that crossed it: request #{_no(last)}'s feedback",
    ]


def _audit_lines(result: ScenarioResult, e: AuditEntry) -> list[str]:
    if e.by != "guard":
        return [f"ROUTE   v{e.version} {e.action} by {e.by}: {_short(e.reason)}"]
    before, after = e.before, e.after
    was = f"canary {before.canary.adapter}" if before and before.canary else "-"
    lines = [f"CONTAIN v{e.version} {e.action} by guard: {was} dropped, live {after.live}"
             f" {'unchanged' if before and before.live == after.live else 'CHANGED'}"]
    last = [s for a in result.alerts if (s := alarming(result, a)) is not None]
    if last:
        lag = e.at.timestamp() - min(s.at for s in last)
        lines.append(f"{_PAD}{lag:.2f} s after the feedback that crossed the threshold")
    return lines


def timeline_lines(result: ScenarioResult) -> list[str]:
    """The run as a person reads it (see the module docstring)."""
    cfg = result.config
    events: list[tuple[float, list[str]]] = [
        (e.at.timestamp(), _audit_lines(result, e)) for e in result.audit if e.action != "seed"]
    events += [(a.created_at.timestamp(), _alert_lines(result, a)) for a in result.alerts]
    if result.dropped_after is not None and result.dropped_seen_at is not None:
        events.append((result.dropped_seen_at, [
            f"SEEN    the client saw the canary gone after request #{result.dropped_after}"]))
    lines = [f"run: {result.run_dir} (home copy: {result.home}; gateway {result.url})",
             f"seed {cfg.seed}; {result.tickets} held-out tickets replayed in shuffled passes;"
             f" monitor round {cfg.drift_interval_s:g} s; bound {cfg.max_requests} requests"]
    for when, block in sorted(events, key=lambda ev: ev[0]):
        lines.append(f"{_at(result, when)}  {block[0]}")
        lines += [f"{' ' * 11}{line}" for line in block[1:]]
    if result.incident is not None:
        inc = result.incident
        lines.append(f"incident {inc.id} ({inc.status}): {inc.summary}")
    tail = result.tail
    if tail:
        lines.append(f"after the drop: {len(tail)} more requests, all answered by"
                     f" {', '.join(sorted({s.model_id for s in tail}))}")
    lines.append(f"{len(result.sent)} requests sent, each labelled; live at the end:"
                 f" {result.live_after}")
    return lines


def _no(s: Sent | None) -> str:
    return "?" if s is None else str(s.index)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _f(v: Any) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def _ci(v: Any) -> str:
    return f"{v[0]:.3f}-{v[1]:.3f}" if isinstance(v, list | tuple) and len(v) == 2 else "-"
