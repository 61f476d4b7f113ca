"""The demo's lineage records, written through the registry (dataset cards, runs, models)."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from lora_router.demo.data import SPLIT_FRACTIONS, Ticket, measure
from lora_router.ground.errors import RegistryError
from lora_router.ground.home import Home
from lora_router.ground.ids import parse_adapter_id
from lora_router.registry.cards import (
    Checkpoint,
    DatasetCard,
    DataSource,
    Hardware,
    Method,
    ModelCard,
    RunManifest,
    Splits,
)
from lora_router.registry.ingest import subjects_by_split
from lora_router.registry.lifecycle import register_adapter, register_dataset, subject_manifest
from lora_router.training.lora import TrainConfig, TrainResult

_LIBRARIES = ("torch", "transformers", "peft", "tokenizers", "safetensors", "accelerate")
GENERATOR_SOURCE = DataSource(
    name="synthetic_support_tickets",
    owner="ml-team",
    license="internal",
    pii="present",  # made-up customer ids and e-mails, as real tickets would have
    generator="lora_router.demo.data (seeded templates)",
    verified="generator-checked",
)
ES_RELABEL_SOURCE = DataSource(
    name="es_relabel_batch_2026_11",
    owner="vendor-labelers",
    license="internal",
    pii="present",  # made-up customer ids and e-mails, as real tickets would have
    generator=None,
    verified="not verified",
)
SPLIT_RULE = "by_customer_entity"


def code_version() -> str:
    """``git rev-parse HEAD`` of the repository holding this code, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "absent"
    return versions


def register_demo_dataset(
    home: Home,
    dataset_id: str,
    tickets: Sequence[Ticket],
    train: Sequence[Ticket],
    *,
    contaminated: bool,
) -> DatasetCard:
    """Dataset card for ``data/<dataset_id>/`` with a keyed subject manifest per split (the
    home's subject key, see :mod:`registry.subjects`), read from the split files written
    there; they must hold exactly the customers of ``tickets``."""
    splits = subjects_by_split(home.dataset_dir(dataset_id), "customer_id")
    if set().union(*splits.values()) != {t.customer_id for t in tickets}:
        raise RegistryError(f"dataset {dataset_id}: the split files do not hold the "
                            "customers of the generated tickets")
    measured: dict[str, Any] = dict(measure(train))
    measured["measured_on"] = "train split; agreement = label vs an independent keyword labeler"
    return register_dataset(
        home,
        dataset_id,
        sources=[GENERATOR_SOURCE, ES_RELABEL_SOURCE] if contaminated else [GENERATOR_SOURCE],
        consent_basis="synthetic tickets of made-up customers; no real personal data",
        labeler_instructions_version="v4-es-vendor" if contaminated else "v3",
        measured=measured,
        splits=Splits(rule=SPLIT_RULE, **SPLIT_FRACTIONS),
        excluded=["raw_pii", "tickets_flagged_legal_hold"],
        subjects=subject_manifest(home, splits=splits, kind="customer_id"),
    )


def run_manifest(result: TrainResult, home: Home, started: datetime,
                 finished: datetime) -> RunManifest:
    cfg: TrainConfig = result.config
    aid = parse_adapter_id(cfg.adapter_id)
    return RunManifest(
        id=f"run-{aid.name}-{aid.version}-{started.strftime('%Y%m%dT%H%M%SZ')}",
        code_version=code_version(),
        seed=cfg.seed,
        hardware=Hardware(device="cpu", cpu=_cpu_name(), threads=cfg.torch_threads),
        libraries=library_versions(),
        started_at=started,
        finished_at=finished,
        config=cfg.model_dump(mode="json"),
        checkpoint=Checkpoint(
            location=result.adapter_dir.relative_to(home.root).as_posix(),
            hash=result.adapter_hash,
        ),
    )


def register_demo_adapter(
    home: Home,
    result: TrainResult,
    manifest: RunManifest,
    eval_: dict[str, float],
    *,
    rollback_target: str | None,
    known_limitations: list[str],
) -> ModelCard:
    cfg = result.config
    return register_adapter(
        home,
        cfg.adapter_id,
        dataset_id=cfg.dataset_id,
        run_manifest=manifest,
        method=Method(r=cfg.r, alpha=cfg.alpha, objective="sft",
                      target_modules=list(cfg.target_modules)),
        base_hash=cfg.base_hash,
        intended_use="classify inbound support tickets (English, Spanish) into 8 categories",
        eval=eval_,
        out_of_scope=["answering product questions", "billing actions",
                      "languages other than en/es"],
        known_limitations=known_limitations,
        rollback_target=rollback_target,
        by="demo-build",
    )
