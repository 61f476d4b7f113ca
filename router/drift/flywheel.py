"""The correction flywheel: a quality or slice alert becomes a retraining trigger and the
next training round's raw material.

For each quality or slice-quality alert (a repeat of an alarm the same test just raised
is skipped), :func:`on_alert`

1. records a retraining trigger in the log database (:mod:`router.drift.triggers`: one per
   adapter version and route; later alerts on it are attached to the same trigger, so
   calling it twice, from two monitors, or again by hand, keeps one trigger);
2. exports, under ``<home>/flywheel/<trigger id>/``:

   - ``failures.jsonl``: every labelled failure (``was_correct`` false) of that adapter
     version on that route, from :data:`LOOKBACK` before its first alert: request id,
     time, arm, input hash, input features, output, failure cluster; the raw prompt only
     where the optional input store still holds it (never from ``inference_log``);
   - ``dataset-card.yaml``: a draft dataset card in the registry's shape
     (:class:`registry.cards.DatasetCard`), bound to ``failures.jsonl`` by hash, with
     ``measured.status: draft``, the trigger, alert, incident and adapter it comes from,
     and what it still needs (correct labels) before it can be registered;
   - ``trigger.json``: the trigger and its alerts with their evidence.

The files are owner-only (they may hold raw prompts). ``lora-router incident export ID``
attaches the incident's quality alerts to its adapter's trigger and exports again
(labels that arrived since are included).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from lora_router.ground.hashing import sha256_file, tree_hash
from lora_router.ground.home import Home
from lora_router.registry.cards import DatasetCard, DataSource, Splits
from lora_router.router.drift.events import Alert
from lora_router.router.drift.groups import slice_features, slice_keyer
from lora_router.router.drift.queries import (
    DriftRecordNotFound,
    LogEntry,
    entries,
    incident_alerts,
    require_incident,
    stored_prompts,
)
from lora_router.router.drift.runbook import Lineage
from lora_router.router.drift.store import DriftStore
from lora_router.router.drift.triggers import (
    Trigger,
    mark_exported,
    migrate_triggers,
    record_trigger,
)

FLYWHEEL_DIR = "flywheel"
QUALITY_SIGNALS = ("quality", "slice_quality")
LOOKBACK = timedelta(days=30)
_NO_END = datetime(9999, 1, 1, tzinfo=UTC)
FAILURES_FILE = "failures.jsonl"
CARD_FILE = "dataset-card.yaml"
TRIGGER_FILE = "trigger.json"


@dataclass(frozen=True, slots=True)
class FlywheelExport:
    trigger: Trigger
    dir: Path
    rows: int
    prompts: int
    created: bool  # the trigger is new (False: the alert had one already)

    @property
    def failures(self) -> Path:
        return self.dir / FAILURES_FILE

    @property
    def card(self) -> Path:
        return self.dir / CARD_FILE

    def to_json(self) -> dict[str, Any]:
        return {"trigger": self.trigger.model_dump(mode="json"), "dir": str(self.dir),
                "failures": str(self.failures), "card": str(self.card), "rows": self.rows,
                "prompts": self.prompts, "created": self.created}


def flywheel_dir(home: Home, trigger_id: int) -> Path:
    return home.root / FLYWHEEL_DIR / str(trigger_id)


async def on_alert(store: DriftStore, home: Home, alert: Alert, *,
                   lineage: Lineage | None = None) -> FlywheelExport | None:
    """The hook for the guard or monitor: for a stored quality or slice-quality alert
    (not a repeat), record its retraining trigger and export (see the module docstring);
    ``None`` for any other alert."""
    if alert.signal not in QUALITY_SIGNALS or alert.evidence.get("repeat"):
        return None
    await migrate_triggers(store)
    trigger, created = await record_trigger(store, alert)
    return await export_trigger(store, home, trigger, lineage=lineage or Lineage.of_home(home),
                                created=created)


async def export_incident(store: DriftStore, home: Home, incident_id: int, *,
                          lineage: Lineage | None = None) -> FlywheelExport:
    """Attach the incident's quality alerts to its adapter's trigger and export."""
    incident = await require_incident(store, incident_id)
    alerts = [a for a in await incident_alerts(store, incident) if a.signal in QUALITY_SIGNALS]
    if not alerts:
        raise DriftRecordNotFound(f"incident {incident_id} has no quality or slice alert to"
                                  " export", incident_id=incident_id)
    await migrate_triggers(store)
    created = False
    for alert in alerts:
        trigger, made = await record_trigger(store, alert)
        created = created or made
    return await export_trigger(store, home, trigger, lineage=lineage or Lineage.of_home(home),
                                created=created, incident_id=incident.id)


async def export_trigger(
    store: DriftStore, home: Home, trigger: Trigger, *, lineage: Lineage,
    created: bool = False, incident_id: int | None = None,
) -> FlywheelExport:
    """Write (or rewrite) the trigger's files from the log as it is now."""
    alerts = [a for i in trigger.alert_ids if (a := await store.alert(i)) is not None]
    if not alerts:
        raise DriftRecordNotFound(f"retraining trigger {trigger.id}: its alerts are gone",
                                  trigger_id=trigger.id)
    first = alerts[0]
    since = min(a.window_start or a.created_at for a in alerts) - LOOKBACK
    failed = await entries(store, model_ids=[trigger.model_id], route=trigger.route,
                           since=since, until=_NO_END, failures_only=True)
    prompts = await stored_prompts(store, [f.request_id for f in failed])
    directory = flywheel_dir(home, trigger.id)
    records = [_record(f, prompts.get(f.request_id)) for f in failed]
    await asyncio.to_thread(_write_jsonl, directory / FAILURES_FILE, records)
    card = draft_card(trigger, alerts, failed, prompts, lineage=lineage,
                      file_hash=sha256_file(directory / FAILURES_FILE),
                      created_at=store.clock(), incident_id=incident_id or first.incident_id)
    await asyncio.to_thread(_write_text, directory / CARD_FILE, _card_yaml(card, trigger))
    trigger = await mark_exported(
        store, trigger, export_dir=directory.relative_to(home.root).as_posix(),
        failures=len(records), prompts=len(prompts), incident_id=incident_id)
    meta = {"trigger": trigger.model_dump(mode="json"),
            "alerts": [a.model_dump(mode="json") for a in alerts]}
    await asyncio.to_thread(_write_text, directory / TRIGGER_FILE,
                            json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    return FlywheelExport(trigger, directory, len(records), len(prompts), created)


def _record(e: LogEntry, prompt: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request_id": e.request_id, "served_at": e.served_at.isoformat(), "route": e.route,
        "model_id": e.model_id, "arm": e.arm, "input_hash": e.input_hash,
        "features": e.features, "output": e.output,
        "predicted_label": e.features.get("predicted_label"),
        "failure_cluster": e.failure_cluster,
    }
    if prompt is not None:
        out["prompt"] = prompt
    return out


def draft_card(
    trigger: Trigger, alerts: Sequence[Alert], failed: Sequence[LogEntry],
    prompts: dict[str, str], *, lineage: Lineage, file_hash: str, created_at: datetime,
    incident_id: int | None = None,
) -> DatasetCard:
    """The draft dataset card of an export (parent: the adapter's training dataset)."""
    parent = lineage.dataset_of(trigger.model_id)
    source = parent.sources[0] if parent is not None and parent.sources else None
    files = {FAILURES_FILE: file_hash}
    return DatasetCard(
        id=f"{trigger.route}-flywheel-{trigger.id}",
        hash=tree_hash(files), files=files,
        sources=[DataSource(
            name=f"inference_log:{trigger.route}",
            owner=source.owner if source is not None else "unknown",
            license=source.license if source is not None else "internal",
            pii="present" if _entities_in_prompts(failed, prompts) else "unknown",
            generator=f"lora-router flywheel: trigger {trigger.id}, alert #{alerts[0].id} on"
                      f" {trigger.model_id}",
        )],
        consent_basis=(f"production requests of route {trigger.route}; confirm they may be"
                       " used for training" + (f" (parent {parent.id}: {parent.consent_basis})"
                                               if parent is not None else "")),
        labeler_instructions_version=(parent.labeler_instructions_version
                                      if parent is not None else "unknown"),
        measured=_measured(trigger, alerts, failed, prompts, incident_id,
                           parent.id if parent is not None else None),
        splits=parent.splits if parent is not None else Splits(
            rule="by_customer_entity", train=0.8, val=0.1, test=0.1),
        excluded=list(parent.excluded) if parent is not None else [],
        created_at=created_at,
    )


def _entities_in_prompts(failed: Sequence[LogEntry], prompts: dict[str, str]) -> bool:
    return any(any(isinstance(c, int) and c > 0
                   for c in (f.features.get("entities") or {}).values())
               for f in failed if f.request_id in prompts)


def _measured(trigger: Trigger, alerts: Sequence[Alert], failed: Sequence[LogEntry],
              prompts: dict[str, str], incident_id: int | None,
              parent: str | None) -> dict[str, Any]:
    specs = [a.detector for a in alerts if "=" in a.detector]
    keyer = slice_keyer(slice_features(list(dict.fromkeys(specs))))
    times = [f.served_at for f in failed]
    return {
        "status": "draft", "trigger": trigger.id, "alerts": [a.id for a in alerts],
        "alert": alerts[0].id, "incident": incident_id, "model_id": trigger.model_id,
        "route": trigger.route, "signals": sorted({f"{a.signal} {a.detector}" for a in alerts}),
        "alert_summary": alerts[0].summary(), "rows": len(failed),
        "rows_with_prompt": len(prompts),
        "failure_clusters": dict(Counter(f.failure_cluster or "(unclustered)"
                                         for f in failed).most_common()),
        "slices": dict(Counter(k for f in failed for k in keyer(f)).most_common()),
        "served": {"from": min(times).isoformat() if times else None,
                   "to": max(times).isoformat() if times else None},
        "parent_dataset": parent,
        "needs": ["a correct label for every row (each is a failure of the adapter)",
                  "the raw prompt of rows without one (input store off, purged or deleted"
                  " by subject)",
                  "register with `lora-router registry register-dataset` once complete"],
    }


def _card_yaml(card: DatasetCard, trigger: Trigger) -> str:
    head = (f"# DRAFT dataset card for the next training round (retraining trigger"
            f" {trigger.id}).\n# Not registered: label the rows in {FAILURES_FILE} first.\n")
    return head + yaml.safe_dump(card.model_dump(mode="json"), sort_keys=False,
                                 allow_unicode=True)


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    _write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n"
                              for r in records))


def _write_text(path: Path, text: str) -> None:
    """Atomically, owner-only (the folder too)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
