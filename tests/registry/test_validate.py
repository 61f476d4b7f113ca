"""`registry validate`: every link resolves and every recorded hash matches the bytes."""

from __future__ import annotations

import json

from lora_router.ground.home import Home
from lora_router.registry.integrity import Problem
from lora_router.registry.lineage import validate
from tests.registry.helpers import cli, edit_yaml, flip_byte, set_routes


def _errors(home: Home) -> list[Problem]:
    return [p for p in validate(home) if p.severity == "error"]


def _kinds(home: Home) -> set[str]:
    return {p.kind for p in _errors(home)}


def test_fresh_home_validates_clean(synth_home: Home) -> None:
    assert validate(synth_home) == []
    result = cli(synth_home, "validate")
    assert result.exit_code == 0, result.output
    assert "registry valid" in result.output


def test_one_flipped_byte_in_adapter_weights_is_reported_with_hashes(synth_home: Home) -> None:
    weights = synth_home.adapter_dir("triage@v1") / "adapter_model.safetensors"
    flip_byte(weights)
    [changed] = [p for p in _errors(synth_home) if p.kind == "adapter_file_changed"]
    assert changed.card == "model card triage@v1"
    assert changed.path == "adapters/triage/v1/adapter_model.safetensors"
    assert changed.expected != changed.found and changed.found.startswith("sha256:")
    # the run manifest's checkpoint hash covers the same bytes
    assert "checkpoint_changed" in _kinds(synth_home)
    result = cli(synth_home, "validate")
    assert result.exit_code == 1
    assert "adapters/triage/v1/adapter_model.safetensors" in result.output
    assert f"expected {changed.expected}, found {changed.found}" in result.output


def test_changed_dataset_file_is_reported(synth_home: Home) -> None:
    path = synth_home.dataset_dir("tickets-v1") / "train.jsonl"
    path.write_text(path.read_text().replace("charged twice", "charged thrice"))
    [p] = _errors(synth_home)
    assert (p.kind, p.card, p.path) == (
        "dataset_file_changed", "dataset card tickets-v1", "data/tickets-v1/train.jsonl")


def test_added_and_removed_dataset_files_are_reported(synth_home: Home) -> None:
    (synth_home.dataset_dir("tickets-v2") / "extra.jsonl").write_text("{}\n")
    (synth_home.dataset_dir("tickets-v1") / "train.jsonl").unlink()
    assert _kinds(synth_home) == {"dataset_file_unrecorded", "dataset_file_missing"}


def test_model_card_pointing_at_missing_dataset_card(synth_home: Home) -> None:
    edit_yaml(synth_home.model_card_path("triage@v2"), trained_on="tickets-v9")
    [p] = _errors(synth_home)
    assert p.kind == "link_unresolved" and p.card == "model card triage@v2"
    assert "tickets-v9" in p.message and p.path == "registry/datasets/tickets-v9.yaml"


def test_missing_run_manifest_is_reported(synth_home: Home) -> None:
    synth_home.run_manifest_path("run-triage-v1").unlink()
    [p] = _errors(synth_home)
    assert p.kind == "link_unresolved" and "run-triage-v1" in p.message


def test_rollback_target_on_another_base(synth_home: Home) -> None:
    other = "sha256:" + "0" * 64
    edit_yaml(synth_home.model_card_path("triage@v1"), base_model__hash=other)
    problems = {(p.kind, p.card): p for p in _errors(synth_home)}
    rb = problems[("rollback_other_base", "model card triage@v2")]
    assert rb.found == other and "triage@v1" in rb.message
    assert problems[("base_mismatch", "model card triage@v1")].found == other


def test_rollback_cycle_and_retired_target(synth_home: Home) -> None:
    edit_yaml(synth_home.model_card_path("triage@v1"), rollback_target="triage@v2")
    [cycle] = [p for p in _errors(synth_home) if p.kind == "rollback_cycle"]
    assert "triage@v1 -> triage@v2 -> triage@v1" in cycle.message or \
        "triage@v2 -> triage@v1 -> triage@v2" in cycle.message
    edit_yaml(synth_home.model_card_path("triage@v1"), rollback_target=None, status="retired")
    kinds = _kinds(synth_home)
    assert "rollback_retired" in kinds and "route_retired" in kinds


def test_rollback_target_that_does_not_exist(synth_home: Home) -> None:
    edit_yaml(synth_home.model_card_path("triage@v2"), rollback_target="triage@v0")
    assert _kinds(synth_home) == {"rollback_unresolved"}


def test_changed_base_file_is_reported(synth_home: Home) -> None:
    flip_byte(synth_home.base_dir / "model.safetensors")
    [p] = _errors(synth_home)
    assert (p.kind, p.path) == ("base_file_changed", "base/model.safetensors")
    assert validate(synth_home, check_base=False) == []


def test_route_to_unregistered_adapter_and_unregistered_dir(synth_home: Home) -> None:
    set_routes(synth_home, "routes:\n  triage:\n    live: triage@v7\n")
    import shutil

    shutil.copytree(synth_home.adapter_dir("triage@v1"), synth_home.adapter_dir("stray@v1"))
    problems = validate(synth_home)
    assert {(p.kind, p.severity) for p in problems} == {
        ("route_unregistered", "error"), ("adapter_unregistered", "warning")}


def test_unreadable_card_is_a_problem_not_a_crash(synth_home: Home) -> None:
    synth_home.model_card_path("triage@v2").write_text("id: [unclosed\n")
    kinds = _kinds(synth_home)
    assert "card_unreadable" in kinds


def test_validate_json_lists_every_problem(synth_home: Home) -> None:
    flip_byte(synth_home.adapter_dir("triage@v2") / "adapter_config.json", 5)
    result = cli(synth_home, "validate", "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False
    found = {(p["kind"], p.get("path")) for p in out["problems"]}
    assert found == {
        ("adapter_file_changed", "adapters/triage/v2/adapter_config.json"),
        ("checkpoint_changed", "adapters/triage/v2"),
    }
