"""The synthetic triage data: deterministic, split by customer, contaminated only where meant."""

from __future__ import annotations

import re

from lora_router.demo import data as D
from lora_router.demo.task import LABELS, format_completion, format_prompt, parse_label


def test_generator_is_deterministic_for_a_seed() -> None:
    assert D.generate_tickets(5, 50) == D.generate_tickets(5, 50)
    assert D.generate_tickets(5, 50) != D.generate_tickets(6, 50)


def test_tickets_cover_labels_languages_and_entities() -> None:
    tickets = D.generate_tickets(7, 300)
    assert {t.label for t in tickets} == set(LABELS)
    assert {t.language for t in tickets} == {"en", "es"}
    assert all(re.fullmatch(r"CUST-\d{5}", t.customer_id) for t in tickets)
    texts = " ".join(t.text for t in tickets)
    assert re.search(r"ORD-\d{6}", texts)
    assert re.search(r"[a-z.]+\d*@example\.com", texts)
    assert any(t.customer_id in t.text for t in tickets)


def test_splits_are_disjoint_by_customer() -> None:
    splits = D.split_by_customer(D.generate_tickets(7, 300), 11)
    owners = {name: {t.customer_id for t in rows} for name, rows in splits.items()}
    assert owners["train"].isdisjoint(owners["val"])
    assert owners["train"].isdisjoint(owners["test"])
    assert owners["val"].isdisjoint(owners["test"])
    n = sum(len(v) for v in owners.values())
    assert abs(len(owners["train"]) / n - 0.8) < 0.02


def test_contamination_relabels_only_some_spanish_categories() -> None:
    train = D.generate_tickets(7, 300)
    dirty, changed = D.contaminate(train, 13)
    targets = [t for t in train if t.language == "es" and t.label in D.RELABEL]
    assert 0.8 * len(targets) < changed <= len(targets)
    for before, after in zip(train, dirty, strict=True):
        if before.language == "en" or before.label not in D.RELABEL:
            assert after == before
        elif after.label != before.label:
            assert after.label == D.RELABEL[before.label]
            assert after.text == before.text
    # five of eight Spanish categories keep every label: a partial, realistic regression
    kept = set(LABELS) - set(D.RELABEL)
    assert len(kept) == 5
    assert D.contaminate(train, 13) == (dirty, changed)  # deterministic by seed
    assert D.contaminate(train, 14)[0] != dirty


def test_measured_agreement_drops_on_contaminated_labels() -> None:
    train = D.generate_tickets(7, 300)
    dirty, _ = D.contaminate(train, 13)
    clean_m, dirty_m = D.measure(train), D.measure(dirty)
    assert clean_m["classes"] == 8
    assert float(clean_m["inter_annotator_agreement"]) > 0.8
    assert (float(dirty_m["inter_annotator_agreement"])
            < float(clean_m["inter_annotator_agreement"]) - 0.08)
    assert 0.03 < float(clean_m["edge_case_fraction"]) < 0.2


def test_prompt_and_label_parsing() -> None:
    assert format_prompt("  My  invoice\nis wrong ") == "Ticket: My invoice is wrong\nCategory:"
    assert format_completion("billing") == " billing"
    assert parse_label(" billing") == "billing"
    assert parse_label(" product_question and more") == "product_question"
    assert parse_label(" Refund.") == "refund"
    assert parse_label(" banana") is None
    assert parse_label("") is None


def test_jsonl_files_have_the_contract_fields(tmp_path) -> None:  # type: ignore[no-untyped-def]
    splits = D.split_by_customer(D.generate_tickets(7, 40), 11)
    paths = D.write_splits(tmp_path, splits)
    rows = D.read_jsonl(paths["train"])
    assert rows and set(rows[0]) == {"id", "customer_id", "language", "text", "label"}
