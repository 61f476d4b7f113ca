"""Markdown pieces of the runbook reports: tables of alerts, route changes, assessments."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from lora_router.router.drift.assess import MIN_GROUP, Assessment, Group
from lora_router.router.drift.events import Alert, Incident
from lora_router.router.drift.triggers import Trigger
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import AuditEntry


def ts(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _g(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else cell(v)


def cell(v: Any) -> str:
    return "-" if v is None or v == "" else str(v).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "_(none)_\n"
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def route_summary(s: RouteState | None) -> str:
    if s is None:
        return "-"
    parts = [f"live={s.live}"]
    if s.canary:
        parts.append(f"canary={s.canary.adapter} {s.canary.percent:g}%")
    if s.shadow:
        parts.append(f"shadow={s.shadow.adapter} {s.shadow.percent:g}%")
    parts.append(f"rollback={s.rollback_target or '-'}")
    return ", ".join(parts)


def alert_rows(alerts: Sequence[Alert]) -> str:
    return table(
        ["alert", "raised (UTC)", "signal", "test", "adapter (arm)", "n", "estimate",
         "95% bound", "statistic", "threshold", "baseline", "guard"],
        [[f"#{a.id}", ts(a.created_at), a.signal, a.detector, f"{a.model_id} ({a.arm or '-'})",
          a.n, num(a.estimate), num(a.bound), num(a.statistic, 2), num(a.threshold, 2),
          num(a.baseline), f"{a.guard_status}" + (f": {a.guard_detail}" if a.guard_detail
                                                    else "")] for a in alerts])


def evidence(alert: Alert) -> str:
    """One alert's evidence, as a short list."""
    ev = alert.evidence
    window = ev.get("window") or {}
    lines = [f"- **#{alert.id}** {alert.summary()}",
             f"  - window: {window.get('from', ts(alert.window_start))} →"
             f" {window.get('to', ts(alert.window_end))}"
             + (f" (requests {window['from_request']} … {window['to_request']})"
                if window.get("from_request") else "")]
    if "wrong" in ev:
        ci = ev.get("ci95") or [None, None]
        lines.append(f"  - {ev.get('wrong')} wrong of {ev.get('n')} labelled in the window"
                     f" (accuracy 95% CI {_g(ci[0])}-{_g(ci[-1])}); {ev.get('n_total')}"
                     " labelled since the test started")
    design = ev.get("design")
    if isinstance(design, dict):
        lines.append(f"  - CUSUM tuned for accuracy {_g(design.get('p0'))} →"
                     f" {_g(design.get('p1'))}, in-control ARL {_g(design.get('arl0_labels'))}"
                     f" labels, false-alarm budget {_g(design.get('false_alarms_per_10k'))}"
                     " per 10k labelled requests")
    if "psi" in ev or "ks_d" in ev:
        keys = ("psi", "js_bits", "ks_d", "p_value", "wasserstein")
        lines.append("  - " + ", ".join(f"{k} {ev[k]:.4g}" for k in keys
                                         if isinstance(ev.get(k), int | float)))
    return "\n".join(lines) + "\n"


def actions(incident: Incident) -> str:
    return table(
        ["at (UTC)", "actor", "action", "adapter (arm)", "route version", "live after",
         "commit ms", "applied ms", "result"],
        [[a.get("at", "-")[:19].replace("T", " "), a.get("actor"), a.get("kind"),
          f"{a.get('adapter')} ({a.get('arm') or '-'})",
          f"{a.get('route_version_before')} → {a.get('route_version_after', '-')}",
          a.get("live_after"), a.get("commit_ms"), a.get("applied_ms"), a.get("detail")]
         for a in incident.actions])


def audit(entries: Sequence[AuditEntry]) -> str:
    return table(
        ["version", "at (UTC)", "by", "action", "reason", "before", "after"],
        [[e.version, ts(e.at), e.by, e.action, e.reason, route_summary(e.before),
          route_summary(e.after)] for e in entries])


def _group_row(g: Group, comparison: str | None) -> list[Any]:
    ref = g.reference
    return [g.key + (" (protected)" if g.protected else ""), g.model.n, num(g.model.accuracy),
            f"{num(g.model.ci95[0])}-{num(g.model.ci95[1])}",
            ref.n if ref is not None and comparison else "-",
            num(ref.accuracy) if ref is not None else "-", num(g.bar),
            num(g.delta), "yes" if g.significant else "", g.failures,
            f"{g.failure_share:.0%}", g.top_cluster]


_GROUP_HEADERS = ["group", "n", "accuracy", "95% CI", "ref n", "ref accuracy", "gate bar",
                  "Δ", "significant", "failures", "of all failures", "top failure_cluster"]


def assessment(a: Assessment, *, max_features: int = 12) -> str:
    """The assess tables: headline, overall, slices, clusters, input features."""
    comp = a.comparison or "none"
    out = [f"**{a.failing_line()}**\n",
           f"- adapter `{a.model_id}` on route `{a.route or '-'}`, {ts(a.since)} → {ts(a.until)}"
           f" UTC: {a.requests} requests, {a.overall.model.n} labelled",
           f"- compared with `{comp}` ({a.comparison_why}): {a.reference_requests} requests,"
           f" same window and route; groups with fewer than {MIN_GROUP} labels on the"
           " comparison are held to the gate bar",
           f"- gate bars: those of `{a.gates_of or 'none'}`\n",
           "#### Overall\n", table(_GROUP_HEADERS, [_group_row(a.overall, a.comparison)]),
           "\n#### By slice\n",
           table(_GROUP_HEADERS, [_group_row(g, a.comparison) for g in a.slices]),
           "\n#### Failures by failure_cluster\n",
           table(["failure_cluster", "failures", "share", f"failures of {comp}",
                  "top slice", "share in slice"],
                 [[c.cluster, c.failures, f"{c.share:.0%}", c.reference_failures,
                   c.top_slice, f"{c.top_slice_share:.0%}"] for c in a.clusters]),
           f"\n#### By input feature and output (top {max_features} by excess failures)\n",
           table(_GROUP_HEADERS,
                 [_group_row(g, a.comparison) for g in a.features[:max_features]])]
    return "\n".join(out)


def triggers(found: Sequence[Trigger]) -> str:
    return table(
        ["trigger", "alerts", "adapter", "first signal", "status", "failures", "with prompt",
         "files"],
        [[t.id, ", ".join(f"#{i}" for i in t.alert_ids), t.model_id,
          f"{t.signal} {t.detector}", t.status, t.failures, t.prompts, t.export_dir]
         for t in found])
