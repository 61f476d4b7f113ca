"""The demo home: loads like a user's model, adapters meet their bars, lineage resolves."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lora_router.demo import build as B
from lora_router.demo.data import read_jsonl
from lora_router.demo.task import LABELS, format_prompt, parse_label
from lora_router.ground.errors import ConfigError
from lora_router.ground.hashing import file_hashes, salted_hash, tree_hash
from lora_router.ground.home import Home
from lora_router.registry.base_pin import read_lock, verify_base
from lora_router.registry.cards import SubjectManifest
from lora_router.registry.store import RegistryStore
from lora_router.registry.subjects import load_key, subject_hash
from lora_router.router.flags.state import load_routes_file


def test_base_loads_offline_like_a_users_model(demo_home: Home) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    tok = AutoTokenizer.from_pretrained(str(demo_home.base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(demo_home.base_dir), dtype=torch.float32)
    assert tok.padding_side == "left"
    assert tok.pad_token and tok.eos_token and tok.bos_token
    assert model.config.model_type == "llama"
    assert model.config.hidden_size == 128 and model.config.num_hidden_layers == 4
    assert model.config.max_position_embeddings >= 512
    enc = tok([format_prompt("short"), format_prompt("a much longer ticket text here")],
              return_tensors="pt", padding=True)
    assert enc["input_ids"][0, 0] == tok.pad_token_id  # left padding
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    assert out.shape == (2, enc["input_ids"].shape[1] + 3)
    assert verify_base(demo_home).name == B.BASE_NAME


def test_adapters_meet_their_accuracy_bars(demo_home: Home) -> None:
    report = B.load_report(demo_home)
    v1, v2 = report.adapters[B.V1], report.adapters[B.V2]
    assert v1.slice_en >= 0.95 and v1.slice_es >= 0.9
    # a realistic regression: v2 is bad on Spanish, not useless, and holds on English
    assert 0.55 <= v2.slice_es <= 0.75, "v2 must regress on Spanish, not collapse"
    assert v2.slice_en >= 0.95, "v2 must hold on English"
    assert abs(v1.slice_en - v2.slice_en) <= 0.03
    assert report.base_eval["accuracy"] < 0.5, "the adapter, not the base, does the task"


def test_recomputed_accuracy_matches_the_report(demo_home: Home) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_router.demo.evaluate import predict, slice_accuracy

    report = B.load_report(demo_home)
    rows = read_jsonl(demo_home.dataset_dir(B.CLEAN_DATASET) / "test.jsonl")
    assert len(rows) == report.test_rows
    tok = AutoTokenizer.from_pretrained(str(demo_home.base_dir))
    base = AutoModelForCausalLM.from_pretrained(str(demo_home.base_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(demo_home.adapter_dir(B.V1))).eval()
    preds = predict(model, tok, [r["text"] for r in rows])
    got = slice_accuracy(rows, preds)
    v1 = report.adapters[B.V1]
    assert got == {"accuracy": v1.accuracy, "slice_en": v1.slice_en, "slice_es": v1.slice_es}
    assert all(p in LABELS for p in preds if p is not None)


def test_v1_answers_a_ticket_with_a_label_then_eos(demo_home: Home) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(demo_home.base_dir))
    base = AutoModelForCausalLM.from_pretrained(str(demo_home.base_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(demo_home.adapter_dir(B.V1))).eval()
    enc = tok([format_prompt("I was charged twice for the same invoice.")], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    assert parse_label(tok.decode(new, skip_special_tokens=True)) == "billing"
    assert tok.eos_token_id in new


def test_cards_exist_and_links_resolve(demo_home: Home) -> None:
    from lora_router.registry.store import RegistryStore

    store = RegistryStore(demo_home)
    lock = read_lock(demo_home)
    assert sorted(store.list_model_ids()) == [B.V1, B.V2]
    for aid in (B.V1, B.V2):
        card = store.get_model_card(aid)
        assert card.base_model.hash == lock.sha256
        assert set(card.eval) >= {"accuracy", "slice_en", "slice_es"}
        assert card.method.target_modules and card.method.r == 16
        files = file_hashes(demo_home.adapter_dir(aid))
        assert card.adapter_files == files and card.adapter_hash == tree_hash(files)
        ds = store.get_dataset_card(card.trained_on)
        assert ds.hash == tree_hash(file_hashes(demo_home.dataset_dir(ds.id)))
        run = store.get_run_manifest(card.run_manifest)
        assert (demo_home.root / run.checkpoint.location) == demo_home.adapter_dir(aid)
        assert run.checkpoint.hash == card.adapter_hash
        assert run.config["base_hash"] == lock.sha256 and run.config["seed"] == run.seed
        assert run.code_version and run.libraries["torch"]
    assert store.get_model_card(B.V1).rollback_target is None
    assert store.get_model_card(B.V2).rollback_target == B.V1
    assert store.get_model_card(B.V2).trained_on == B.CONTAMINATED_DATASET


def _digest(home: Home, value: str, manifest: SubjectManifest) -> str:
    if manifest.scheme == "salted-sha256":  # a demo home built before keyed manifests
        assert manifest.salt is not None
        return salted_hash(value, manifest.salt)
    key = load_key(home)
    assert key is not None and manifest.salt is None
    return subject_hash(value, key)


def test_dataset_cards_record_subjects_and_quality(demo_home: Home) -> None:
    from lora_router.registry.store import RegistryStore

    store = RegistryStore(demo_home)
    rows = read_jsonl(demo_home.dataset_dir(B.CLEAN_DATASET) / "test.jsonl")
    es_customer = next(r["customer_id"] for r in rows if r["language"] == "es")
    clean = store.get_dataset_card(B.CLEAN_DATASET)
    dirty = store.get_dataset_card(B.CONTAMINATED_DATASET)
    for card in (clean, dirty):
        assert card.subjects is not None
        assert _digest(demo_home, es_customer, card.subjects) in card.subjects.hashes
        assert _digest(demo_home, "CUST-00000", card.subjects) not in card.subjects.hashes
        assert es_customer not in json.dumps(card.model_dump(mode="json"))
        assert card.measured["classes"] == 8
        assert card.splits.rule == "by_customer_entity"
    assert (dirty.measured["inter_annotator_agreement"]
            < clean.measured["inter_annotator_agreement"] - 0.08)
    assert {s.name for s in dirty.sources} > {s.name for s in clean.sources}


def test_routes_file_validates(demo_home: Home) -> None:
    states = load_routes_file(demo_home.routes_file)
    route = states[B.ROUTE]
    assert route.live == B.V1
    assert route.task.type == "classification" and route.task.labels == LABELS
    # the live adapter's card says it is live; the other one is only registered
    cards = RegistryStore(demo_home)
    assert cards.get_model_card(B.V1).status == "live"
    assert cards.get_model_card(B.V2).status == "registered"


def test_build_is_idempotent(demo_home: Home) -> None:
    before = {p: p.stat().st_mtime_ns for p in demo_home.root.rglob("*") if p.is_file()}
    report = B.build_demo(demo_home)
    assert report.built is False
    after = {p: p.stat().st_mtime_ns for p in demo_home.root.rglob("*") if p.is_file()}
    assert {p: after[p] for p in before} == before


def test_build_refuses_a_home_with_another_pinned_base(tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = Home.at(tmp_path)
    home.base_lock.write_text(json.dumps(
        {"name": "meta-base-8b", "version": "r3", "sha256": "sha256:00", "files": {},
         "pinned_at": 0.0}))
    with pytest.raises(ConfigError, match="meta-base-8b"):
        B.build_demo(home)
    assert not home.base_dir.exists()
