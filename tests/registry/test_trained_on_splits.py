"""The deletion answer follows which splits reached the weights (issue 9, defect 10).

A dataset ``tickets-v3`` with train, val and test files, registered through the CLI (so its
subject manifest records membership per split), and an adapter ``triage@v3`` trained on it
by the project's trainer (which reads ``train_file`` only): a subject whose records are only
in the test split is not in the weights; one in train is, with the split named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lora_router.ground.home import Home
from lora_router.registry.lineage import validate
from lora_router.registry.store import RegistryStore
from lora_router.registry.trained_on import trained_on
from tests.registry.conftest import _write_jsonl, train_and_register
from tests.registry.helpers import cli, edit_yaml

TRAIN_ONLY, VAL_ONLY, TEST_ONLY, TRAIN_AND_TEST = (
    "CUST-30001", "CUST-30002", "CUST-30003", "CUST-30004")
SPLIT_ROWS = {
    "train": [(TRAIN_ONLY, "en", "I was charged twice for my order", "billing"),
              (TRAIN_AND_TEST, "es", "Mi paquete no ha llegado todavia", "shipping")],
    "val": [(VAL_ONLY, "en", "I want to return these shoes", "returns")],
    "test": [(TEST_ONLY, "es", "No puedo entrar en mi cuenta", "account"),
             (TRAIN_AND_TEST, "en", "The app crashes when I log in", "technical")],
}
CARD = {
    "sources": [{"name": "prod_tickets_2026", "owner": "support-eng", "license": "internal",
                 "pii": "redacted"}],
    "consent_basis": "support interactions, retention policy R-12",
    "labeler_instructions_version": "v3",
    "splits": {"rule": "by_customer_entity", "train": 0.5, "val": 0.25, "test": 0.25},
}


@pytest.fixture(scope="module")
def split_template(synth_template: Home, tmp_path_factory: pytest.TempPathFactory) -> Home:
    """The synthetic home plus tickets-v3 (train/val/test) and triage@v3 trained on it."""
    root = tmp_path_factory.mktemp("split-home") / "home"
    shutil.copytree(synth_template.root, root)
    home = Home.at(root)
    files = root.parent / "files"
    for split, rows in SPLIT_ROWS.items():
        _write_jsonl(files / f"{split}.jsonl", rows)
    card = root.parent / "card.yaml"
    card.write_text(yaml.safe_dump(CARD))
    result = cli(home, "register-dataset", "tickets-v3", "--card", str(card), "--files",
                 str(files), "--subject-field", "customer_id")
    assert result.exit_code == 0, result.output
    train_and_register(home, "triage@v3", "tickets-v3")
    return home


@pytest.fixture
def split_home(split_template: Home, tmp_path: Path) -> Home:
    dst = tmp_path / "home"
    shutil.copytree(split_template.root, dst)
    return Home.at(dst)


def _out(result: object) -> str:
    return " ".join(result.output.split())  # type: ignore[attr-defined]


def test_the_cli_records_membership_per_split(split_home: Home) -> None:
    manifest = RegistryStore(split_home).get_dataset_card("tickets-v3").subjects
    assert manifest is not None and manifest.splits is not None
    assert {k: len(v) for k, v in manifest.splits.items()} == {"test": 2, "train": 2, "val": 1}
    assert sorted(set().union(*manifest.splits.values())) == manifest.hashes
    assert "CUST-3000" not in split_home.dataset_card_path("tickets-v3").read_text()
    assert not [p for p in validate(split_home) if p.kind == "subjects_unsplit"]


def test_a_subject_only_in_the_test_split_is_not_in_the_weights(split_home: Home) -> None:
    answer = trained_on(split_home, subject=TEST_ONLY)
    assert answer.answer == "no" and answer.summary == "not in the weights (test split only)"
    assert [(h.dataset_id, h.splits) for h in answer.hits] == [("tickets-v3", ("test",))]
    [hit] = answer.adapters
    assert (hit.adapter_id, hit.splits, hit.in_weights) == ("triage@v3", [("test", "unused")],
                                                            False)
    assert "not used" in hit.validation and "train.jsonl" in hit.validation
    assert answer.retrain_exclude == []
    [held] = answer.data_only
    assert "records in dataset tickets-v3, split test" in held
    result = cli(split_home, "trained-on", "--subject", TEST_ONLY)
    assert result.exit_code == 0, result.output
    out = _out(result)
    assert "NO: not in the weights (test split only)" in out
    assert "YES" not in out and "a retrain must exclude" not in out
    assert "triage@v3: split test: not in the weights" in out
    assert "triage@v3: validation: not used" in out


def test_a_subject_in_train_is_in_the_weights_with_the_split_named(split_home: Home) -> None:
    answer = trained_on(split_home, subject=TRAIN_ONLY)
    assert answer.answer == "yes" and answer.summary == "in the weights of triage@v3"
    [hit] = answer.adapters
    assert hit.splits == [("train", "weights")] and hit.in_weights
    [excl] = answer.retrain_exclude
    assert excl.startswith("customer_id hmac-sha256:")
    assert excl.endswith("(records in dataset tickets-v3, split train)")
    out = _out(cli(split_home, "trained-on", "--subject", TRAIN_ONLY))
    assert "YES: in the weights of triage@v3" in out and "(split train)" in out
    assert "triage@v3: split train: in the weights (training data)" in out
    assert "a retrain must exclude: - customer_id hmac-sha256:" in out


def test_a_subject_in_train_and_test_excludes_train_and_names_test_as_data_only(
    split_home: Home,
) -> None:
    out = json.loads(cli(split_home, "trained-on", "--subject", TRAIN_AND_TEST,
                         "--json").stdout)
    assert out["answer"] == "yes"
    assert out["hits"] == [{"dataset": "tickets-v3", "splits": ["test", "train"]}]
    [adapter] = out["adapters"]
    assert adapter["splits"] == [{"split": "test", "use": "unused"},
                                 {"split": "train", "use": "weights"}]
    assert [e.rsplit("(", 1)[1] for e in out["retrain_exclude"]] == [
        "records in dataset tickets-v3, split train)"]
    assert len(out["data_only"]) == 1 and "split test" in out["data_only"][0]
    assert TRAIN_AND_TEST not in json.dumps(out)


def test_validation_counts_only_when_the_run_used_it_for_selection(split_home: Home) -> None:
    assert trained_on(split_home, subject=VAL_ONLY).summary == \
        "not in the weights (val split only)"
    run = RegistryStore(split_home).get_model_card("triage@v3").run_manifest
    edit_yaml(split_home.run_manifest_path(run), config__val_file="val.jsonl")
    answer = trained_on(split_home, subject=VAL_ONLY)
    assert answer.answer == "yes"
    [hit] = answer.adapters
    assert hit.splits == [("val", "selection")]
    assert "early stopping / checkpoint selection only" in hit.validation
    assert "config.val_file" in hit.validation
    assert answer.retrain_exclude[0].endswith("split val)")
    out = _out(cli(split_home, "trained-on", "--subject", VAL_ONLY))
    assert "YES" in out and "validation used for early stopping / checkpoint selection" in out


def test_an_old_manifest_without_splits_is_answered_conservatively_and_says_so(
    split_home: Home,
) -> None:
    edit_yaml(split_home.dataset_card_path("tickets-v3"), subjects__splits=None)
    answer = trained_on(split_home, subject=TEST_ONLY)
    assert answer.answer == "yes"  # it may be in train: the card cannot say
    [hit] = answer.adapters
    assert hit.splits == [(None, "unknown")]
    [note] = answer.notes
    assert "records no split membership" in note and "tickets-v3" in note
    assert answer.retrain_exclude[0].endswith("split not recorded)")
    out = _out(cli(split_home, "trained-on", "--subject", TEST_ONLY))
    assert "note: dataset tickets-v3: its subject manifest records no split membership" in out
    assert "YES" in out
    [warning] = [p for p in validate(split_home) if p.kind == "subjects_unsplit"]
    assert warning.severity == "warning" and warning.card == "dataset card tickets-v3"


def test_a_run_that_does_not_say_what_it_trained_on_counts_every_split(
    split_home: Home,
) -> None:
    run = RegistryStore(split_home).get_model_card("triage@v3").run_manifest
    data = yaml.safe_load(split_home.run_manifest_path(run).read_text())
    del data["config"]["train_file"]
    split_home.run_manifest_path(run).write_text(yaml.safe_dump(data))
    answer = trained_on(split_home, subject=TEST_ONLY)
    assert answer.answer == "yes" and answer.adapters[0].splits == [("test", "unknown")]
    assert any("names no training file" in n for n in answer.notes)


def test_a_source_query_names_the_split_the_run_trained_on(split_home: Home) -> None:
    answer = trained_on(split_home, source="prod_tickets_2026")
    assert answer.answer == "yes"
    [hit] = answer.adapters
    assert (hit.adapter_id, hit.splits) == ("triage@v3", [("train", "weights")])
