"""Subject manifests are keyed (HMAC-SHA256) with a secret outside the card, so a leaked
card cannot be reversed by enumerating ids; a query without the key answers "unknown";
old salted cards still answer. Dataset sources that do not say whether they hold PII are
"unknown" and warned about."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

from lora_router.ground.hashing import salted_hash
from lora_router.ground.home import Home
from lora_router.registry.cards import DataSource
from lora_router.registry.lineage import validate
from lora_router.registry.store import RegistryStore
from lora_router.registry.subjects import (
    KEY_ENV,
    key_id,
    key_path,
    load_key,
    subject_hash,
    subject_manifest,
)
from lora_router.registry.trained_on import trained_on
from tests.registry.helpers import cli, edit_yaml

IDS = [f"CUST-{n:05d}" for n in range(10000, 10100)]  # the low-entropy id space of the data


def test_the_card_holds_no_secret_and_cannot_be_enumerated(synth_home: Home) -> None:
    card = RegistryStore(synth_home).get_dataset_card("tickets-v1")
    assert card.subjects is not None
    assert (card.subjects.scheme, card.subjects.salt) == ("hmac-sha256", None)
    key = load_key(synth_home)
    assert key is not None and len(key) == 32
    assert stat.S_IMODE(key_path(synth_home).stat().st_mode) == 0o600
    assert card.subjects.key_id == key_id(key) == hashlib.sha256(key).hexdigest()[:8]
    text = synth_home.dataset_card_path("tickets-v1").read_text()
    assert key.hex() not in text and "salt" not in text
    # an attacker holding only the card: every value in it as a salt, every id: no match
    candidates = {str(v) for v in json.loads(card.model_dump_json()).values()} | {""}
    hashes = set(card.subjects.hashes)
    tried = {salted_hash(i, s) for i in IDS for s in candidates}
    tried |= {"sha256:" + hashlib.sha256(i.lower().encode()).hexdigest() for i in IDS}
    assert not tried & hashes
    # with the key, the enumeration finds exactly the customers of the data
    assert {i for i in IDS if subject_hash(i, key) in hashes} == {
        f"CUST-1000{n}" for n in range(1, 6)}


def test_without_the_key_the_answer_is_unknown_not_no(synth_home: Home) -> None:
    key_path(synth_home).unlink()
    for subject in ("CUST-10004", "CUST-99999"):
        answer = trained_on(synth_home, subject=subject)
        assert answer.answer == "unknown" and answer.datasets == []
        assert sorted(answer.unknown) == ["tickets-v1", "tickets-v2"]
        assert KEY_ENV in answer.unknown["tickets-v1"]
    result = cli(synth_home, "trained-on", "--subject", "CUST-10004")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "UNKNOWN for tickets-v1: no subject key" in out and "NO:" not in out
    assert not key_path(synth_home).exists()  # a query never makes a key


def test_another_key_is_unknown_and_the_right_env_key_answers(
    synth_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "not-the-key-the-cards-were-made-with")
    answer = trained_on(synth_home, subject="CUST-10004")
    assert answer.answer == "unknown"
    assert "is not the one the manifest was made with" in answer.unknown["tickets-v1"]
    out = json.loads(cli(synth_home, "trained-on", "--subject", "CUST-10004", "--json").stdout)
    assert out["answer"] == "unknown" and "tickets-v2" in out["unknown_reasons"]
    # a manifest made under the env key is answered with it; the key file is not used
    key_path(synth_home).unlink()
    card = RegistryStore(synth_home).get_dataset_card("tickets-v1")
    manifest = subject_manifest(synth_home, ["CUST-10004"])
    RegistryStore(synth_home).put_dataset_card(card.model_copy(update={"subjects": manifest}))
    assert not key_path(synth_home).exists()
    answer = trained_on(synth_home, subject="cust-10004")
    assert answer.answer == "yes" and answer.datasets == ["tickets-v1"]
    assert answer.retrain_exclude[0].startswith("customer_id hmac-sha256:")


def test_an_old_salted_card_is_still_read_and_warned_about(synth_home: Home) -> None:
    salt = "0123abcd"
    edit_yaml(synth_home.dataset_card_path("tickets-v1"), subjects={
        "kind": "customer_id", "salt": salt,
        "hashes": sorted(salted_hash(f"CUST-1000{n}", salt) for n in range(1, 6))})
    card = RegistryStore(synth_home).get_dataset_card("tickets-v1")
    assert card.subjects is not None and card.subjects.scheme == "salted-sha256"
    answer = trained_on(synth_home, subject="CUST-10004")
    assert answer.answer == "yes" and answer.datasets == ["tickets-v1"]
    assert trained_on(synth_home, subject="CUST-99999").answer == "no"
    warnings = {(p.kind, p.card) for p in validate(synth_home) if p.severity == "warning"}
    assert ("subjects_reversible", "dataset card tickets-v1") in warnings


def test_the_key_file_is_not_part_of_validation(synth_home: Home) -> None:
    assert key_path(synth_home).is_file()
    problems = validate(synth_home)
    assert [p for p in problems if p.severity == "error"] == []
    assert not any(".subject_key" in str(p) for p in problems)


def test_pii_defaults_to_unknown_and_validate_warns(synth_home: Home) -> None:
    assert DataSource(name="x", owner="o", license="l").pii == "unknown"
    assert not [p for p in validate(synth_home) if p.kind == "pii_unknown"]
    edit_yaml(synth_home.dataset_card_path("tickets-v2"), sources=[
        {"name": "prod_tickets_2025_2026", "owner": "support-eng", "license": "internal"}])
    [warning] = [p for p in validate(synth_home) if p.kind == "pii_unknown"]
    assert warning.severity == "warning" and warning.card == "dataset card tickets-v2"
    assert "prod_tickets_2025_2026: pii is unknown" in warning.message
    result = cli(synth_home, "validate", "--skip-base")
    assert result.exit_code == 0 and "pii is unknown" in result.output


def test_demo_cards_say_pii_explicitly(demo_home: Home) -> None:
    store = RegistryStore(demo_home)
    sources = [s for i in store.list_dataset_ids() for s in store.get_dataset_card(i).sources]
    assert sources and all(s.pii in ("none", "redacted", "present") for s in sources)
