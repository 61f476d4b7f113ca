"""`registry register` / `register-dataset`: hashes computed, links checked, versions immutable."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from lora_router.ground.errors import AdapterRetired, RegistryError
from lora_router.ground.home import Home
from lora_router.registry.base_pin import read_lock
from lora_router.registry.integrity import adapter_file_hashes, checkpoint_hash, verify_adapter
from lora_router.registry.lifecycle import register_dataset, set_status
from lora_router.registry.lineage import validate
from lora_router.registry.store import RegistryStore
from lora_router.registry.subjects import key_id, load_key, subject_hash
from lora_router.training.lora import TrainConfig, train_lora
from tests.registry.helpers import cli, flip_byte


def _train_outside(home: Home, tmp_path: Path, adapter_id: str = "triage@v3") -> tuple[Path, Path]:
    """A new adapter trained outside the home, and a run manifest YAML for it."""
    lock = read_lock(home)
    ds = RegistryStore(home).get_dataset_card("tickets-v1")
    cfg = TrainConfig(adapter_id=adapter_id, base_name=lock.name, base_hash=lock.sha256,
                      dataset_id="tickets-v1", dataset_hash=ds.hash, seed=3, steps=1,
                      batch_size=2, r=2, alpha=4.0, target_modules=("q_proj",),
                      torch_threads=1)
    out = tmp_path / "outside" / "adapter"
    train_lora(cfg, home, out)
    now = datetime.now(UTC).isoformat()
    manifest = {"run_manifest": {
        "id": "run-v3", "code_version": "abc123", "seed": 3,
        "hardware": {"device": "cpu", "threads": 1}, "libraries": {"peft": "0.21"},
        "started_at": now, "finished_at": now, "config": cfg.model_dump(mode="json")}}
    path = tmp_path / "outside" / "run.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return out, path


def _register_args(src: Path, manifest: Path, *extra: str) -> list[str]:
    return ["register", str(src), "--id", "triage@v3", "--dataset", "tickets-v1",
            "--run-manifest", str(manifest), "--intended-use", "triage",
            "--eval", "task_f1=0.9", "--eval", "slice_es=0.8", *extra]


def test_register_copies_the_adapter_and_records_every_hash(
    synth_home: Home, tmp_path: Path
) -> None:
    src, manifest = _train_outside(synth_home, tmp_path)
    result = cli(synth_home, *_register_args(src, manifest, "--rollback-target", "triage@v2"))
    assert result.exit_code == 0, result.output
    card = verify_adapter(synth_home, "triage@v3")
    assert card.adapter_files == adapter_file_hashes(src)
    assert card.eval == {"task_f1": 0.9, "slice_es": 0.8}
    assert (card.method.r, card.method.alpha, card.method.target_modules) == (2, 4.0, ["q_proj"])
    assert card.base_model.hash == read_lock(synth_home).sha256
    assert card.rollback_target == "triage@v2" and card.status == "registered"
    run = RegistryStore(synth_home).get_run_manifest("run-v3")
    assert run.checkpoint.location == "adapters/triage/v3"
    assert run.checkpoint.hash == checkpoint_hash(src) == card.adapter_hash
    assert validate(synth_home) == []


def test_register_refuses_another_base_and_leaves_nothing(
    synth_home: Home, tmp_path: Path
) -> None:
    src, manifest = _train_outside(synth_home, tmp_path)
    result = cli(synth_home, *_register_args(src, manifest, "--base-hash", "sha256:" + "2" * 64))
    assert result.exit_code == 2
    assert "pinned base" in result.output
    assert not synth_home.adapter_dir("triage@v3").exists()
    assert not synth_home.model_card_path("triage@v3").exists()


@pytest.mark.parametrize(("args", "message"), [
    (("--dataset", "tickets-v9"), "tickets-v9"),
    (("--rollback-target", "triage@v0"), "triage@v0"),
])
def test_register_refuses_links_that_do_not_resolve(
    synth_home: Home, tmp_path: Path, args: tuple[str, str], message: str
) -> None:
    src, manifest = _train_outside(synth_home, tmp_path)
    result = cli(synth_home, *_register_args(src, manifest, *args))
    assert result.exit_code == 2 and message in result.output
    assert not synth_home.adapter_dir("triage@v3").exists()


def test_versions_are_immutable(synth_home: Home, tmp_path: Path) -> None:
    src, manifest = _train_outside(synth_home, tmp_path)
    assert cli(synth_home, *_register_args(src, manifest)).exit_code == 0
    # same bytes again: idempotent
    assert cli(synth_home, *_register_args(src, manifest)).exit_code == 0
    flip_byte(src / "adapter_model.safetensors")
    result = cli(synth_home, *_register_args(src, manifest))
    assert result.exit_code == 2 and "already holds a different adapter" in result.output
    set_status(synth_home, "triage@v3", "retired", "test", "done", routes={})
    from lora_router.registry.lifecycle import register_adapter

    with pytest.raises(AdapterRetired):
        register_adapter(synth_home, "triage@v3", dataset_id="tickets-v1",
                         run_manifest=RegistryStore(synth_home).get_run_manifest("run-v3"),
                         method=RegistryStore(synth_home).get_model_card("triage@v3").method,
                         base_hash=read_lock(synth_home).sha256, intended_use="x")


def test_register_dataset_cli_hashes_files_and_builds_subject_manifest(
    synth_home: Home, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text(
        '{"customer_id": "CUST-777", "text": "hola", "label": "billing"}\n')
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"dataset_card": {
        "sources": [{"name": "prod_tickets", "owner": "support-eng", "license": "internal",
                     "pii": "redacted"}],
        "consent_basis": "R-12", "labeler_instructions_version": "v3",
        "measured": {"classes": 8}, "splits": {"rule": "by_customer", "train": 0.8,
                                                "val": 0.1, "test": 0.1},
        "excluded": ["raw_pii"]}}))
    result = cli(synth_home, "register-dataset", "tickets-v3", "--card", str(card),
                 "--files", str(files), "--subject-field", "customer_id")
    assert result.exit_code == 0, result.output
    ds = RegistryStore(synth_home).get_dataset_card("tickets-v3")
    assert set(ds.files) == {"train.jsonl"} and ds.excluded == ["raw_pii"]
    assert ds.subjects is not None and ds.subjects.kind == "customer_id"
    key = load_key(synth_home)
    assert key is not None and ds.subjects.scheme == "hmac-sha256"
    assert ds.subjects.hashes == [subject_hash("CUST-777", key)]
    assert ds.subjects.key_id == key_id(key) and ds.subjects.salt is None
    assert "CUST-777" not in synth_home.dataset_card_path("tickets-v3").read_text()
    # a changed dataset cannot be re-registered under the same id
    (synth_home.dataset_dir("tickets-v3") / "train.jsonl").write_text("{}\n")
    with pytest.raises(RegistryError, match="immutable"):
        register_dataset(synth_home, "tickets-v3", sources=ds.sources, consent_basis="R-12",
                         labeler_instructions_version="v3", splits=ds.splits)


def test_register_dataset_refuses_a_wrong_expected_hash(synth_home: Home, tmp_path: Path) -> None:
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({
        "hash": "sha256:9f3c1a", "sources": [], "consent_basis": "x",
        "labeler_instructions_version": "v1",
        "splits": {"rule": "r", "train": 1, "val": 0, "test": 0}}))
    result = cli(synth_home, "register-dataset", "tickets-v1", "--card", str(card))
    assert result.exit_code == 2 and "sha256:9f3c1a" in result.output
