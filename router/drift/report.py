"""Runbook reports: an incident's timeline (detect, contain, assess) and a route's drift.

:func:`incident_report` writes ``report.md`` and PNG charts into one folder (default
``<home>/incidents/<id>/``):

- **timeline**: the alerts (detect), the guard's actions and the route's audited changes
  (contain), the assessment (assess), in time order;
- **detect**: every alert with its evidence (window, n, estimate, bound, statistic,
  threshold, baseline, test design);
- **contain**: the incident's actions (versions before/after, commit and apply times) and
  the route's audit trail over the window (guard and on-call changes);
- **assess**: :mod:`router.drift.assess`'s tables and its failing-cluster line;
- charts (:mod:`router.drift.charts`): accuracy, output drift and input drift over time
  per adapter version and slice, alerts and route changes marked; accuracy by slice and
  input group against the comparison; then the runbook's remaining steps and the
  flywheel's triggers.

:func:`drift_report` writes the same charts and a summary for a route without an incident.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lora_router.ground.errors import RouteNotFound
from lora_router.ground.home import Home
from lora_router.router.drift import markdown as md
from lora_router.router.drift.assess import Assessment, assess, pick_comparison
from lora_router.router.drift.charts import Marker, render_all, render_groups
from lora_router.router.drift.events import Alert, Incident
from lora_router.router.drift.groups import slice_features
from lora_router.router.drift.queries import (
    DriftRecordNotFound,
    LogEntry,
    entries,
    incident_alerts,
    require_incident,
    route_models,
)
from lora_router.router.drift.runbook import Lineage, RouteView, assess_model, held_to, route_view
from lora_router.router.drift.signals import Signals, compute_signals
from lora_router.router.drift.store import DriftStore
from lora_router.router.drift.triggers import migrate_triggers, triggers
from lora_router.router.flags.store import AuditEntry, RouteStore

PAD = timedelta(hours=1)


@dataclass(frozen=True)
class ReportFiles:
    dir: Path
    markdown: Path
    charts: list[Path] = field(default_factory=list)
    failing_line: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "report": str(self.markdown),
                "charts": [str(p) for p in self.charts], "failing_line": self.failing_line}


def incident_window(incident: Incident, alerts: Sequence[Alert],
                    now: datetime) -> tuple[datetime, datetime]:
    """From before the first alert's evidence to after the last action (at most now)."""
    starts = [incident.opened_at, *(a.window_start or a.created_at for a in alerts)]
    ends = [incident.updated_at, *(a.created_at for a in alerts)]
    first, last = min(starts), max(ends)
    pad = max(PAD, last - first)
    return first - 2 * pad, min(max(now, last), last + pad)


def _markers(alerts: Sequence[Alert], audit: Sequence[AuditEntry]) -> list[Marker]:
    """Alerts raised at one time as one line (a tick often raises several), and each
    audited route change."""
    at: dict[datetime, list[Alert]] = {}
    for a in alerts:
        at.setdefault(a.created_at, []).append(a)
    out = []
    for when, group in sorted(at.items()):
        ids = [a.id for a in group]
        name = (f"#{ids[0]}" if len(ids) == 1 else f"#{min(ids)}-#{max(ids)} ({len(ids)})")
        tests = ", ".join(sorted({a.detector for a in group}))
        out.append(Marker(when, f"alert {name}: {tests}", "alert"))
    out += [Marker(e.at, f"route v{e.version}: {e.action} by {e.by}", "change") for e in audit
            if e.action != "seed"]
    return out


def _first(rows: Sequence[LogEntry], since: datetime) -> datetime:
    """Where the charts start: the first row (a long window's empty start is not drawn)."""
    return max(since, rows[0].served_at) if rows else since


def _in(entries_: Sequence[AuditEntry], since: datetime, until: datetime) -> list[AuditEntry]:
    return [e for e in entries_ if since <= e.at <= until]


async def _charts(sig: Signals, out: Path, markers: Sequence[Marker]) -> list[Path]:
    return await asyncio.to_thread(render_all, sig, out, markers)


async def _groups_chart(a: Assessment, out: Path) -> Path:
    rows = [(g.key, g.model, g.reference) for g in [a.overall, *a.slices, *a.features[:8]]]
    return await asyncio.to_thread(
        render_groups, f"{a.model_id} vs {a.comparison or 'gate bars'} (same window and route)",
        rows, (a.model_id, a.comparison), out / "assess.png",
        a.failing.key if a.failing is not None else None)


def _timeline(alerts: Sequence[Alert], incident: Incident, audit: Sequence[AuditEntry],
              assessed: tuple[datetime, str] | None) -> str:
    events: list[tuple[datetime, str, str]] = [
        (a.created_at, "DETECT", f"alert #{a.id}: {a.summary()}") for a in alerts]
    for act in incident.actions:
        try:
            at = datetime.fromisoformat(str(act.get("at")))
        except ValueError:
            at = incident.updated_at
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        events.append((at, "CONTAIN", f"{act.get('actor')} {act.get('kind')}"
                       f" {act.get('adapter')}: route v{act.get('route_version_before')} →"
                       f" v{act.get('route_version_after', '-')}, {act.get('detail')}"))
    for e in audit:
        step = "CONTAIN" if e.by == "guard" or e.action == "rollback" else "CHANGE"
        events.append((e.at, step, f"route v{e.version} {e.action} by {e.by}: {e.reason}"
                       f" ({md.route_summary(e.after)})"))
    if assessed is not None:
        events.append((assessed[0], "ASSESS", assessed[1]))
    events.sort(key=lambda ev: ev[0])
    return md.table(["time (UTC)", "step", "event"], [[md.ts(t), s, e] for t, s, e in events])


async def incident_report(
    store: DriftStore, home: Home, incident_id: int, *, routes: RouteStore | None,
    out: Path | None = None, lineage: Lineage | None = None,
    since: datetime | None = None, until: datetime | None = None, now: datetime | None = None,
) -> ReportFiles:
    """Write the incident's report (see the module docstring); returns its files."""
    now = now or datetime.now(UTC)
    incident = await require_incident(store, incident_id)
    alerts = await incident_alerts(store, incident)
    lineage = lineage or Lineage.of_home(home)
    start, end = incident_window(incident, alerts, now)
    since, until = since or start, until or end
    out = out or home.root / "incidents" / str(incident.id)
    view = await route_view(routes, incident.route)
    rows = await entries(store, route=incident.route, since=since, until=until)
    since = _first(rows, since)
    try:
        assessment: Assessment | None = await assess_model(
            store, incident.model_id, since=since, until=until, view=view, lineage=lineage)
    except DriftRecordNotFound:
        assessment = None
    sig = compute_signals(rows, since=since, until=until,
                          slice_features=slice_features(view.protect),
                          baselines=lineage.baselines,
                          gate_model=assessment.comparison if assessment else None)
    audit = _in(view.audit, since, until)
    charts = await _charts(sig, out, _markers(alerts, audit))
    if assessment is not None:
        charts.append(await _groups_chart(assessment, out))
    await migrate_triggers(store)
    found = await triggers(store, route=incident.route, model_id=incident.model_id)
    text = _incident_md(incident, alerts, view, audit, assessment, sig, charts, found, now,
                        (since, until))
    path = out / "report.md"
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    return ReportFiles(out, path, charts, assessment.failing_line() if assessment else None)


def _incident_md(incident: Incident, alerts: Sequence[Alert], view: RouteView,
                 audit: Sequence[AuditEntry], a: Assessment | None, sig: Signals,
                 charts: Sequence[Path], found: Sequence[Any], now: datetime,
                 window: tuple[datetime, datetime]) -> str:
    assessed = (now, a.failing_line()) if a is not None else None
    parts = [
        f"# Incident {incident.id}: {incident.route} · {incident.model_id}"
        f" ({incident.arm or '-'})\n",
        f"- status: **{incident.status}**; opened {md.ts(incident.opened_at)} UTC, updated"
        f" {md.ts(incident.updated_at)} UTC",
        f"- summary: {incident.summary}",
        f"- window of this report: {md.ts(window[0])} → {md.ts(window[1])} UTC"
        f" (buckets of {sig.buckets.width})",
        f"- route now: {md.route_summary(view.state)}"
        + (f" ({view.note})" if view.note else "") + "\n",
        "## Timeline\n", _timeline(alerts, incident, audit, assessed),
        "\n## 1. Detect\n", md.alert_rows(alerts), "", *(md.evidence(x) for x in alerts),
        "\n## 2. Contain\n", "Actions of this incident:\n", md.actions(incident),
        "\nRoute audit over the window (guard and on-call changes):\n", md.audit(audit),
        "\n## 3. Assess\n", md.assessment(a) if a is not None
        else f"_no labelled rows of {incident.model_id} in the window_\n",
        "\n## Charts\n", *(f"![{p.stem}]({p.name})\n" for p in charts),
        "\n## Next: diagnose, recover, prevent\n",
        "- **DIAGNOSE**: data (contamination missed by the gate: fix the dataset), drift (the"
        " world changed: retrain on fresh data), forgetting (add the broken axis to the gate),"
        " scope (used outside its intended use: fix routing).",
        f"- **RECOVER**: `lora-router incident export {incident.id}` writes the labelled"
        " failures and a draft dataset card for the next round; retrain, run the full"
        " release gate, shadow, then canary.",
        "- **PREVENT**: add the failing cluster as a permanent regression case; update the"
        " model card's known_limitations.\n",
        f"Retraining triggers of {incident.model_id} on {incident.route}:\n",
        md.triggers(found),
    ]
    return "\n".join(parts)


def default_drift_dir(home: Home, route: str, now: datetime) -> Path:
    return home.root / "reports" / "drift" / f"{route}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


async def drift_report(
    store: DriftStore, home: Home, route: str, *, since: datetime, until: datetime,
    routes: RouteStore | None, out: Path | None = None, lineage: Lineage | None = None,
    now: datetime | None = None,
) -> ReportFiles:
    """Charts and a summary of one route's adapters over ``[since, until)``."""
    now = now or datetime.now(UTC)
    lineage = lineage or Lineage.of_home(home)
    view = await route_view(routes, route)
    served = await route_models(store, route, since=since, until=until)
    if not served:
        if routes is not None and view.state is None:
            raise RouteNotFound(f"no route {route!r} (not in the route store, no log rows)",
                                route=route)
        raise DriftRecordNotFound(f"no inference-log rows on route {route!r} in this window"
                                  " (try a longer --since)", route=route)
    out = out or default_drift_dir(home, route, now)
    rows = await entries(store, route=route, since=since, until=until)
    features = slice_features(view.protect)
    sig = compute_signals(rows, since=_first(rows, since), until=until, slice_features=features,
                          baselines=lineage.baselines,
                          gate_model=view.state.live if view.state else None)
    alerts = [a for a in await store.alerts(route=route, since=since) if a.created_at <= until]
    audit = _in(view.audit, since, until)
    charts = await _charts(sig, out, _markers(alerts, audit))
    assessed = _assess_all(rows, served, view, lineage, since, until)
    text = _drift_md(route, view, sig, served, alerts, audit, assessed, charts, (since, until))
    path = out / "report.md"
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    return ReportFiles(out, path, charts)


def _assess_all(rows: Sequence[LogEntry], served: dict[str, tuple[int, int]], view: RouteView,
                lineage: Lineage, since: datetime, until: datetime) -> list[Assessment]:
    labelled = {m: lab for m, (_, lab) in served.items()}
    state = view.state
    out = []
    for model in sorted(m for m, lab in labelled.items() if lab):
        comp, why = pick_comparison(model, labelled=labelled, candidates=[
            (state.rollback_target if state else None, "the route's rollback target"),
            (lineage.rollback_of(model), "the rollback target in its model card"),
            (state.live if state else None, "the route's live adapter")])
        gates_of, gates = held_to(model, view, lineage)
        out.append(assess([r for r in rows if r.model_id == model],
                          [r for r in rows if r.model_id == comp], model_id=model, route=view.route,
                          comparison=comp, comparison_why=why, since=since, until=until,
                          gates=gates, protect=view.protect, gates_of=gates_of))
    return out


def _latest(values: Sequence[float | None]) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def _drift_md(route: str, view: RouteView, sig: Signals, served: dict[str, tuple[int, int]],
              alerts: Sequence[Alert], audit: Sequence[AuditEntry],
              assessed: Sequence[Assessment], charts: Sequence[Path],
              window: tuple[datetime, datetime]) -> str:
    per_slice = []
    for m in sig.models:
        for s in sig.slices:
            r = sig.pooled(m, s)
            per_slice.append([m, s, r.n, md.num(r.accuracy),
                              f"{md.num(r.ci95[0])}-{md.num(r.ci95[1])}",
                              md.num(sig.bars.get(s)),
                              md.num(_latest(sig.output_psi.get((m, s), [])))])
    drift = [[m, name, md.num(_latest(v)), sig.reference[m]]
             for (name, m), v in sorted(sig.input_drift.items())]
    parts = [
        f"# Drift report: route {route}\n",
        f"- window: {md.ts(window[0])} → {md.ts(window[1])} UTC (buckets of"
        f" {sig.buckets.width})",
        f"- route now: {md.route_summary(view.state)}" + (f" ({view.note})" if view.note else ""),
        f"- protected slices: {', '.join(view.protect) or 'none (sliced by language)'}\n",
        "## Adapters\n",
        md.table(["adapter", "requests", "labelled"], [[m, n, lab] for m, (n, lab)
                                                        in sorted(served.items())]),
        "\n## Quality and output drift by slice\n",
        md.table(["adapter", "slice", "labelled", "accuracy", "95% CI", "gate bar",
                  "latest label PSI"], per_slice),
        "\n## Input drift (latest bucket)\n",
        md.table(["adapter", "feature", "latest", "against"], drift),
        "\n## Where each adapter fails\n",
        *(f"- `{a.model_id}` vs `{a.comparison or 'gate bars'}`: {a.failing_line()}"
          for a in assessed), "",
        "\n## Alerts\n", md.alert_rows(alerts),
        "\n## Route changes\n", md.audit(audit),
        "\n## Charts\n", *(f"![{p.stem}]({p.name})\n" for p in charts),
    ]
    return "\n".join(parts)

