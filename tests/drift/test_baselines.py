"""Drift baselines from lineage: computed by the log's own feature path, bound to the card by
hash, checked by ``registry validate``, computable for the cards of an older home."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lora_router.adapters.peft_engine import EmbeddedEngine, EngineConfig
from lora_router.demo import build as B
from lora_router.demo.data import read_jsonl
from lora_router.demo.task import LABELS, format_completion, format_prompt
from lora_router.ground.home import Home
from lora_router.registry.lineage import validate
from lora_router.registry.store import RegistryStore
from lora_router.router.cli.main import app
from lora_router.router.drift.baseline_model import QUANTILE_LEVELS, Baseline
from lora_router.router.drift.baselines import (
    attach_baseline,
    base_token_counter,
    baseline_path,
    compute_baseline,
    frequencies,
    load_baseline,
    quantiles,
    summarize,
)
from lora_router.router.log.record import InferenceRecord
from lora_router.router.log.rows import RowBuilder

runner = CliRunner()


def _cli(home: Home, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["registry", *args, "--home", str(home.root)])


def _strip_baselines(home: Home) -> None:
    """Make ``home`` look like one built before baselines: no files, no card references."""
    store = RegistryStore(home)
    for aid in store.list_model_ids():
        card = store.get_model_card(aid)
        store.put_model_card(card.model_copy(update={"baseline": None}))
    shutil.rmtree(home.registry_dir / "baselines", ignore_errors=True)


def test_quantiles_and_frequencies_on_known_data() -> None:
    assert quantiles(list(range(21)))[:3] == [0.0, 1.0, 2.0]
    assert quantiles(list(range(21)))[-1] == 20.0
    assert quantiles([5.0]) == [5.0] * len(QUANTILE_LEVELS)
    assert quantiles([0, 10], [0.0, 0.25, 0.5, 1.0]) == [0.0, 2.5, 5.0, 10.0]
    assert quantiles([]) == []
    assert frequencies(["es", "en", "es", "es"]) == {"en": 0.25, "es": 0.75}
    assert frequencies([]) == {}


def test_summary_of_feature_dicts() -> None:
    rows = [
        {"chars": 10, "words": 2, "language": "en", "entities": {"email": 1, "url": 0},
         "predicted_label": "billing"},
        {"chars": 30, "words": 6, "language": "es", "entities": {"email": 0, "url": 0},
         "predicted_label": None},
    ]
    b = summarize(rows, adapter_id="x@v1", gates={"overall": 0.9}, computed_from=["t"])
    assert b.n == 2 and b.gates == {"overall": 0.9}
    assert b.features == {"language": {"en": 0.5, "es": 0.5}}
    assert b.labels == {"billing": 0.5, "none": 0.5}
    assert b.numeric["chars"][0] == 10.0 and b.numeric["chars"][-1] == 30.0
    assert b.numeric["chars"][10] == 20.0  # the median
    assert b.numeric["entities.email"] == quantiles([1, 0])
    assert set(b.numeric) == {"chars", "words", "entities.email", "entities.url"}


def test_baseline_equals_what_the_log_writer_computes_on_the_same_data(
    demo_home: Home,
) -> None:
    """The training rows, served as the gateway logs them (the writer's RowBuilder, the
    engine's token count, the route's labels), summarise to the stored baseline."""
    engine = EmbeddedEngine.from_home(demo_home, EngineConfig())
    builder = RowBuilder(labels_for=lambda route: LABELS, token_counter=engine.count_tokens)
    rows = read_jsonl(demo_home.dataset_dir(B.CLEAN_DATASET) / "train.jsonl")
    logged = []
    for i, r in enumerate(rows):
        record = InferenceRecord(
            request_id=f"r{i}", model_id=B.V1, output=format_completion(r["label"]),
            served_at=datetime.now(UTC), route=B.ROUTE, prompt=format_prompt(r["text"]))
        row, _ = builder.build(record)
        logged.append(row["input_features"])
    stored = load_baseline(demo_home, B.V1)
    assert stored is not None
    from_log = summarize(logged, adapter_id=B.V1, gates=stored.gates,
                         computed_from=stored.computed_from)
    assert from_log == stored
    # and against the data itself: every row counted, labels as trained, the language mix
    assert stored.n == len(rows)
    assert stored.labels == frequencies(r["label"] for r in rows)
    es = sum(r["language"] == "es" for r in rows) / len(rows)
    assert abs(stored.features["language"].get("es", 0.0) - es) < 0.02
    assert {"chars", "words", "tokens", "entities.email", "entities.order_id",
            "entities.customer_id"} <= set(stored.numeric)


def test_demo_cards_carry_their_baselines_with_gates_from_eval(demo_home: Home) -> None:
    store = RegistryStore(demo_home)
    for aid in (B.V1, B.V2):
        card = store.get_model_card(aid)
        assert card.baseline is not None
        assert card.baseline.path == baseline_path(demo_home, aid).relative_to(
            demo_home.root).as_posix()
        baseline = load_baseline(demo_home, aid)
        assert baseline is not None and baseline.adapter_id == aid
        assert baseline.gates == {"overall": card.eval["accuracy"],
                                  "slice_en": card.eval["slice_en"],
                                  "slice_es": card.eval["slice_es"]}
        ds = store.get_dataset_card(card.trained_on)
        assert f"dataset:{ds.id}/train.jsonl {ds.files['train.jsonl']}" in baseline.computed_from
    # v2 learned a relabelled Spanish batch: its label baseline says so
    v1, v2 = load_baseline(demo_home, B.V1), load_baseline(demo_home, B.V2)
    assert v1 is not None and v2 is not None and v1.labels != v2.labels
    assert v1.features == v2.features  # the same tickets, only labels differ


def test_recomputing_gives_the_same_bytes(copy_home: Home) -> None:
    card = RegistryStore(copy_home).get_model_card(B.V1)
    assert card.baseline is not None
    before = (copy_home.root / card.baseline.path).read_bytes()
    _, again = attach_baseline(copy_home, B.V1, token_counter=base_token_counter(copy_home))
    assert again.baseline == card.baseline
    assert (copy_home.root / card.baseline.path).read_bytes() == before
    assert compute_baseline(copy_home, B.V1, token_counter=base_token_counter(copy_home)) \
        == Baseline.model_validate_json(before)


def test_validate_catches_a_tampered_baseline_and_warns_on_a_missing_one(
    copy_home: Home,
) -> None:
    assert [p for p in validate(copy_home) if p.kind.startswith("baseline")] == []
    path = baseline_path(copy_home, B.V2)
    data = json.loads(path.read_text())
    data["gates"]["slice_es"] = 0.99  # a lower bar is an easier life for a bad adapter
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    [changed] = [p for p in validate(copy_home) if p.kind.startswith("baseline")]
    assert (changed.kind, changed.severity) == ("baseline_changed", "error")
    assert changed.card == f"model card {B.V2}"
    assert changed.path == f"registry/baselines/{B.V2}.json"
    result = _cli(copy_home, "validate", "--skip-base")
    assert result.exit_code == 1 and "baseline" in result.output
    path.unlink()
    [missing] = [p for p in validate(copy_home) if p.kind.startswith("baseline")]
    assert (missing.kind, missing.severity) == ("baseline_missing", "warning")


def test_baseline_command_on_an_old_home(copy_home: Home) -> None:
    _strip_baselines(copy_home)
    assert RegistryStore(copy_home).get_model_card(B.V1).baseline is None
    assert [p for p in validate(copy_home) if p.kind.startswith("baseline")] == []
    one = _cli(copy_home, "baseline", B.V1)
    assert one.exit_code == 0, one.output
    assert f"registry/baselines/{B.V1}.json" in one.output
    assert RegistryStore(copy_home).get_model_card(B.V2).baseline is None
    every = _cli(copy_home, "baseline", "--all", "--json")
    assert every.exit_code == 0, every.output
    done = json.loads(every.output)
    assert [d["adapter_id"] for d in done] == [B.V1, B.V2]
    for d in done:
        card = RegistryStore(copy_home).get_model_card(d["adapter_id"])
        assert card.baseline is not None and card.baseline.sha256 == d["sha256"]
    assert [p for p in validate(copy_home) if p.severity == "error"] == []


@pytest.mark.parametrize("args, message", [
    ((), "exactly one"),
    ((B.V1, "--all"), "exactly one"),
    (("nope@v9",), "nope@v9"),
])
def test_baseline_command_refuses_bad_input_in_one_line(
    copy_home: Home, args: tuple[str, ...], message: str
) -> None:
    result = _cli(copy_home, "baseline", *args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_registering_an_adapter_computes_its_baseline(copy_home: Home, tmp_path: Path) -> None:
    store = RegistryStore(copy_home)
    v1 = store.get_model_card(B.V1)
    manifest = store.get_run_manifest(v1.run_manifest).model_dump(mode="json")
    manifest["id"] = "run-support-triage-v3"
    manifest["config"]["adapter_id"] = "support-triage@v3"
    manifest_path = tmp_path / "run.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest))
    src = shutil.copytree(copy_home.adapter_dir(B.V1), tmp_path / "adapter")
    result = _cli(copy_home, "register", str(src), "--id", "support-triage@v3",
                  "--dataset", B.CLEAN_DATASET, "--run-manifest", str(manifest_path),
                  "--intended-use", "triage", "--eval", "accuracy=0.9",
                  "--eval", "slice_es=0.8")
    assert result.exit_code == 0, result.output
    baseline = load_baseline(copy_home, "support-triage@v3")
    assert baseline is not None and baseline.gates == {"overall": 0.9, "slice_es": 0.8}
    assert baseline.features == compute_baseline(copy_home, B.V1).features  # same data
