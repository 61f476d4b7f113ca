"""Build the demo home offline and deterministically: data, tokenizer, base, two adapters,
evaluation, lineage cards (each model card bound to its drift baseline) and ``routes.yaml``.

``build_demo`` is idempotent: a home whose ``demo-report.json`` exists is left as it is
(the saved report is returned with ``built=False``) unless ``force``. Everything but the
cards' timestamps, run ids and subject-manifest digests (keyed by the home's random
subject key, ``registry/.subject_key``) is bit-for-bit the same on every build with
the same libraries and thread count.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lora_router.demo import data as D
from lora_router.demo.lineage import register_demo_adapter, register_demo_dataset, run_manifest
from lora_router.demo.progress import BuildProgress
from lora_router.demo.summary import build_time_line, readme_table
from lora_router.demo.task import LABELS
from lora_router.ground.errors import ConfigError
from lora_router.ground.hashing import file_hashes, tree_hash
from lora_router.ground.home import Home
from lora_router.registry.base_pin import BaseLock, pin_base, read_lock
from lora_router.registry.store import RegistryStore
from lora_router.router.auth.policy import ACCESS_FILE, write_access_file
from lora_router.router.drift.baselines import attach_baseline, base_token_counter
from lora_router.router.flags.route_status import sync_route_status
from lora_router.router.flags.state import RouteState, TaskSpec, dump_routes_file
from lora_router.training.lora import TrainConfig, TrainResult, train_lora

log = logging.getLogger(__name__)

BASE_NAME, BASE_VERSION = "tiny-llama-demo", "1"
ROUTE = ADAPTER_NAME = "support-triage"
V1, V2 = f"{ADAPTER_NAME}@v1", f"{ADAPTER_NAME}@v2"
CLEAN_DATASET, CONTAMINATED_DATASET = "support-tickets-v1", "support-tickets-v2"
REPORT_FILE = "demo-report.json"
DATA_SEED, SPLIT_SEED, CONTAMINATION_SEED, PRETRAIN_DATA_SEED, TRAIN_SEED = 7, 11, 13, 99, 1234
N_CUSTOMERS, PRETRAIN_CUSTOMERS = 1000, 600
TRAIN_STEPS, TRAIN_BATCH, TRAIN_LR = 150, 32, 3e-3


@dataclass
class AdapterReport:
    adapter_id: str
    dataset_id: str
    accuracy: float
    slice_en: float
    slice_es: float
    adapter_hash: str
    final_loss: float
    train_seconds: float


@dataclass
class DemoReport:
    """What a build produced; saved as ``<home>/demo-report.json``."""

    home: str
    built: bool  # False: the home was already built and left as it was
    build_seconds: float
    base_name: str
    base_version: str
    base_hash: str
    datasets: dict[str, str]  # dataset id -> content hash
    base_eval: dict[str, float]  # the plain base on the same test prompts
    adapters: dict[str, AdapterReport]
    test_rows: int
    timings: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, str] = field(default_factory=dict)  # adapter id -> baseline sha256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DemoReport:
        adapters = {k: AdapterReport(**v) for k, v in d.pop("adapters").items()}
        return cls(adapters=adapters, **d)


def report_path(home: Home) -> Path:
    return home.root / REPORT_FILE


def is_built(home: Home) -> bool:
    return report_path(home).is_file() and home.base_lock.is_file()


def load_report(home: Home) -> DemoReport:
    report = DemoReport.from_dict(json.loads(report_path(home).read_text()))
    report.built = False
    return report


_OWNED_DIRS = ("base", "adapters", "registry", "data")
_OWNED_FILES = ("base.lock.json", "routes.yaml", REPORT_FILE, ACCESS_FILE)


def _clear(home: Home) -> None:
    """Remove what a demo build writes (never the home itself, nor ``log/``)."""
    for d in _OWNED_DIRS:
        shutil.rmtree(home.root / d, ignore_errors=True)
    for f in _OWNED_FILES:
        (home.root / f).unlink(missing_ok=True)


def _install(staging: Home, home: Home) -> None:
    """Move a finished build into ``home``: the old demo is replaced in a few renames."""
    home.root.mkdir(parents=True, exist_ok=True)
    _clear(home)
    for name in (*_OWNED_DIRS, *_OWNED_FILES):
        if (staging.root / name).exists():
            os.replace(staging.root / name, home.root / name)


def _check_foreign_base(home: Home) -> None:
    if home.base_lock.is_file() and read_lock(home).name != BASE_NAME:
        raise ConfigError(
            f"{home.root} already pins base {read_lock(home).name!r}; "
            "use --force to replace it with the demo"
        )


def build_demo(home: Home, *, force: bool = False, progress: bool = False) -> DemoReport:
    """Build the demo into ``home`` (see module docstring); returns the report.

    The build runs in a staging directory inside the home and is moved in when complete,
    so a rebuild leaves an existing demo usable until the end and a failed build leaves
    nothing half-written in the home.
    """
    if is_built(home) and not force:
        log.info("demo home %s already built; use force to rebuild", home.root)
        return load_report(home)
    if not force:
        _check_foreign_base(home)
    home.root.mkdir(parents=True, exist_ok=True)
    staging = Home.at(tempfile.mkdtemp(prefix=".build-", dir=home.root))
    try:
        report = _build(staging, progress)
        _install(staging, home)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
    report.home = str(home.root)
    report_path(home).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    log.info("demo home built in %.1fs at %s", report.build_seconds, home.root)
    for line in summary_lines(report):
        log.info("%s", line)
    return report


def summary_lines(report: DemoReport) -> list[str]:
    """The README's demo table and build-time line, from ``report``."""
    table = readme_table({aid: {"accuracy": a.accuracy, "slice_en": a.slice_en,
                                "slice_es": a.slice_es} for aid, a in report.adapters.items()})
    return [*table, build_time_line(report.build_seconds, report.timings)]


def _build(home: Home, progress: bool) -> DemoReport:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with BuildProgress(progress) as bp:
        t = time.perf_counter()
        tickets, splits, dirty_train = _make_data(home, bp)
        timings["data"] = time.perf_counter() - t
        t = time.perf_counter()
        lock = _make_base(home, tickets, bp)
        timings["base"] = time.perf_counter() - t
        results: dict[str, tuple[TrainResult, datetime, datetime]] = {}
        for aid, ds in ((V1, CLEAN_DATASET), (V2, CONTAMINATED_DATASET)):
            t = time.perf_counter()
            results[aid] = _train(home, lock, aid, ds, bp)
            timings[f"train {aid}"] = time.perf_counter() - t
        t = time.perf_counter()
        evals = _evaluate(home, splits["test"], bp)
        timings["evaluate"] = time.perf_counter() - t
        t = time.perf_counter()
        _register(home, tickets, {CLEAN_DATASET: splits["train"],
                                  CONTAMINATED_DATASET: dirty_train}, results, evals, bp)
        _write_routes(home)
        timings["lineage"] = time.perf_counter() - t
    return DemoReport(
        home=str(home.root),
        built=True,
        build_seconds=round(time.perf_counter() - started, 2),
        base_name=lock.name,
        base_version=lock.version,
        base_hash=lock.sha256,
        datasets={ds: tree_hash(file_hashes(home.dataset_dir(ds)))
                  for ds in (CLEAN_DATASET, CONTAMINATED_DATASET)},
        base_eval=evals.pop("__base__"),
        adapters={
            aid: AdapterReport(aid, r.config.dataset_id, *_slices(evals[aid]), r.adapter_hash,
                               round(r.final_loss, 5), round(r.seconds, 2))
            for aid, (r, _, _) in results.items()
        },
        test_rows=len(splits["test"]),
        timings={k: round(v, 2) for k, v in timings.items()},
        baselines={aid: _baseline_hash(home, aid) for aid in results},
    )


def _baseline_hash(home: Home, adapter_id: str) -> str:
    ref = RegistryStore(home).get_model_card(adapter_id).baseline
    return ref.sha256 if ref is not None else ""


def _slices(ev: dict[str, float]) -> tuple[float, float, float]:
    return ev["accuracy"], ev["slice_en"], ev["slice_es"]


def _make_data(
    home: Home, bp: BuildProgress
) -> tuple[list[D.Ticket], dict[str, list[D.Ticket]], list[D.Ticket]]:
    bp.stage("data", "synthetic tickets")
    tickets = D.generate_tickets(DATA_SEED, N_CUSTOMERS)
    splits = D.split_by_customer(tickets, SPLIT_SEED)
    D.write_splits(home.dataset_dir(CLEAN_DATASET), splits)
    dirty_train, changed = D.contaminate(splits["train"], CONTAMINATION_SEED)
    D.write_splits(home.dataset_dir(CONTAMINATED_DATASET), {**splits, "train": dirty_train})
    bp.done("data", f"{len(tickets)} tickets, {changed} es labels merged in v2")
    return tickets, splits, dirty_train


def _make_base(home: Home, tickets: list[D.Ticket], bp: BuildProgress) -> BaseLock:
    from lora_router.demo.pretrain import PretrainConfig, pretrain_base
    from lora_router.demo.tokenizer import save_tokenizer, train_tokenizer

    bp.stage("tokenizer", "tokenizer (byte-level BPE)")
    lines = D.pretrain_lines(PRETRAIN_DATA_SEED, PRETRAIN_CUSTOMERS)
    tokenizer = train_tokenizer(D.tokenizer_corpus([t.text for t in tickets] + lines),
                                vocab_size=1024)
    save_tokenizer(tokenizer, home.base_dir)
    bp.done("tokenizer", f"vocab {len(tokenizer)}")
    cfg = PretrainConfig()
    bp.stage("pretrain", "pre-train tiny base", cfg.steps)
    pretrain_base(tokenizer, lines, home.base_dir, cfg,
                  on_step=lambda s, _n, loss: bp.update("pretrain", s, f"loss {loss:.3f}"))
    return pin_base(home, name=BASE_NAME, version=BASE_VERSION)


def _train(home: Home, lock: BaseLock, adapter_id: str, dataset_id: str,
           bp: BuildProgress) -> tuple[TrainResult, datetime, datetime]:
    config = TrainConfig(
        adapter_id=adapter_id,
        base_name=lock.name,
        base_hash=lock.sha256,
        dataset_id=dataset_id,
        dataset_hash=tree_hash(file_hashes(home.dataset_dir(dataset_id))),
        seed=TRAIN_SEED,
        steps=TRAIN_STEPS,
        batch_size=TRAIN_BATCH,
        lr=TRAIN_LR,
    )
    bp.stage(adapter_id, f"train {adapter_id}", config.steps)
    started = datetime.now(UTC)
    result = train_lora(config, home, on_step=lambda s, _n, loss: bp.update(
        adapter_id, s, f"loss {loss:.3f}"))
    return result, started, datetime.now(UTC)


def _evaluate(home: Home, test: list[D.Ticket], bp: BuildProgress) -> dict[str, dict[str, float]]:
    from lora_router.demo.evaluate import evaluate_adapters

    bp.stage("eval", "evaluate (held-out test)")
    rows = [t.row() for t in test]
    evals = evaluate_adapters(home.base_dir, {a: home.adapter_dir(a) for a in (V1, V2)}, rows)
    bp.done("eval", " ".join(f"{a}: en {e['slice_en']:.2f} es {e['slice_es']:.2f}"
                            for a, e in evals.items() if a != "__base__"))
    return evals


def _register(
    home: Home,
    tickets: list[D.Ticket],
    trains: dict[str, list[D.Ticket]],
    results: dict[str, tuple[TrainResult, datetime, datetime]],
    evals: dict[str, dict[str, float]],
    bp: BuildProgress,
) -> None:
    bp.stage("lineage", "lineage, baselines, routes")
    for ds, train in trains.items():
        register_demo_dataset(home, ds, tickets, train, contaminated=ds == CONTAMINATED_DATASET)
    v1, v2 = evals[V1], evals[V2]
    limitations = {
        V1: [f"es slice {v1['slice_es']:.2f} vs en {v1['slice_en']:.2f} on held-out test",
             "multi-topic tickets (edge cases) are the most frequent errors"],
        V2: [f"es slice {v2['slice_es']:.2f} vs {v1['slice_es']:.2f} for {V1}: trained on an "
             "unverified Spanish relabel batch that files refund, returns and cancellation "
             "tickets under billing, shipping and account", f"en slice {v2['slice_en']:.2f}"],
    }
    counter = base_token_counter(home)
    for aid, (result, started, finished) in results.items():
        manifest = run_manifest(result, home, started, finished)
        register_demo_adapter(home, result, manifest, evals[aid],
                              rollback_target=V1 if aid == V2 else None,
                              known_limitations=limitations[aid])
        attach_baseline(home, aid, token_counter=counter)  # the drift monitor's reference
    bp.done("lineage")


def _write_routes(home: Home) -> None:
    state = RouteState(route=ROUTE, live=V1,
                       task=TaskSpec(type="classification", labels=LABELS))
    dump_routes_file({ROUTE: state}, home.routes_file)
    write_access_file(home.root, require_app_key=False)  # the quickstart needs no API key
    # the live adapter's card says so, as every later route change keeps it
    sync_route_status(home, None, state, all_states={ROUTE: state})
