"""A small synthetic home for registry tests: a tiny random Llama + tokenizer pinned as the
base, two datasets with subject manifests, two real LoRA adapters trained by the project's
deterministic trainer, their cards, and a routes file. Built once per session; tests that
change files take a private copy (``synth_home``)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lora_router.ground.home import Home

ROWS = [
    ("CUST-10001", "en", "I was charged twice for my order", "billing"),
    ("CUST-10002", "es", "Mi paquete no ha llegado todavia", "shipping"),
    ("CUST-10003", "en", "I want to return these shoes", "returns"),
    ("CUST-10004", "es", "No puedo entrar en mi cuenta", "account"),
    ("CUST-10001", "en", "The app crashes when I log in", "technical"),
    ("CUST-10005", "es", "Quiero un reembolso de mi compra", "refund"),
]
ROWS_V2 = [
    ("CUST-20001", "en", "Please cancel my subscription", "cancellation"),
    ("CUST-20002", "es", "Tienen esta camisa en azul?", "product_question"),
    *ROWS[:3],
]
TEXTS = [r[2] for r in ROWS + ROWS_V2] + ["billing shipping returns account technical refund"]


def _write_jsonl(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": f"T-{i:04d}", "customer_id": c, "language": lang, "text": t,
                    "label": label})
        for i, (c, lang, t, label) in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n")


def _build_base(home: Home) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lora_router.demo.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer(TEXTS * 4, vocab_size=300)
    save_tokenizer(tok, home.base_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(home.base_dir))


def _register_dataset(home: Home, dataset_id: str, rows: list[tuple[str, str, str, str]],
                      source: str) -> str:
    from lora_router.registry.cards import DataSource, Splits
    from lora_router.registry.ingest import subjects_by_split
    from lora_router.registry.lifecycle import register_dataset, subject_manifest

    _write_jsonl(home.dataset_dir(dataset_id) / "train.jsonl", rows)
    subjects = subject_manifest(home, splits=subjects_by_split(home.dataset_dir(dataset_id),
                                                               "customer_id"), kind="customer_id")
    card = register_dataset(
        home, dataset_id,
        sources=[DataSource(name=source, owner="support-eng", license="internal",
                            pii="redacted"),
                 DataSource(name="synthetic_edge_cases_v2", owner="ml-team",
                            license="internal", pii="none", generator="model-x",
                            verified="human-sampled")],
        consent_basis="support interactions, retention policy R-12, PII redacted",
        labeler_instructions_version="v3",
        splits=Splits(rule="by_customer_entity", train=0.8, val=0.1, test=0.1),
        measured={"inter_annotator_agreement": 0.88, "classes": 8},
        excluded=["raw_pii", "tickets_flagged_legal_hold"],
        subjects=subjects,
    )
    return card.hash


def train_and_register(home: Home, adapter_id: str, dataset_id: str,
                       rollback_target: str | None = None, seed: int = 7) -> None:
    from lora_router.registry.base_pin import read_lock
    from lora_router.registry.cards import Checkpoint, Hardware, Method, RunManifest
    from lora_router.registry.lifecycle import register_adapter
    from lora_router.registry.store import RegistryStore
    from lora_router.training.lora import TrainConfig, train_lora

    lock = read_lock(home)
    ds = RegistryStore(home).get_dataset_card(dataset_id)
    cfg = TrainConfig(adapter_id=adapter_id, base_name=lock.name, base_hash=lock.sha256,
                      dataset_id=dataset_id, dataset_hash=ds.hash, seed=seed, steps=2,
                      batch_size=4, r=2, alpha=4.0, target_modules=("q_proj", "v_proj"),
                      torch_threads=1, warmup_steps=0)
    started = datetime.now(UTC)
    result = train_lora(cfg, home)
    run_id = f"run-{adapter_id.replace('@', '-')}"
    manifest = RunManifest(
        id=run_id, code_version="test", seed=seed, hardware=Hardware(device="cpu", threads=1),
        libraries={"torch": "test"}, started_at=started, finished_at=datetime.now(UTC),
        config=cfg.model_dump(mode="json"),
        checkpoint=Checkpoint(location="", hash=result.adapter_hash),
    )
    register_adapter(
        home, adapter_id, dataset_id=dataset_id, run_manifest=manifest,
        method=Method(r=2, alpha=4.0, target_modules=["q_proj", "v_proj"]),
        base_hash=lock.sha256, intended_use="classify support tickets into 8 categories",
        eval={"task_f1": 0.91, "format": 0.99, "slice_es": 0.87},
        out_of_scope=["billing actions"], known_limitations=["es slice below en"],
        rollback_target=rollback_target,
    )


ROUTES = """\
routes:
  triage:
    live: triage@v1
    canary: {adapter: triage@v2, percent: 10}
  triage-es:
    live: triage@v2
"""


def build_synth_home(root: Path) -> Home:
    from lora_router.registry.base_pin import pin_base

    home = Home.at(root)
    _build_base(home)
    pin_base(home, "tiny-llama", "1")
    _register_dataset(home, "tickets-v1", ROWS, "prod_tickets_2023_2025")
    _register_dataset(home, "tickets-v2", ROWS_V2, "prod_tickets_2025_2026")
    train_and_register(home, "triage@v1", "tickets-v1")
    train_and_register(home, "triage@v2", "tickets-v2", rollback_target="triage@v1")
    home.routes_file.write_text(ROUTES)
    return home


@pytest.fixture(scope="session")
def synth_template(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return build_synth_home(tmp_path_factory.mktemp("synth-home"))


@pytest.fixture
def synth_home(synth_template: Home, tmp_path: Path) -> Home:
    """A private, writable copy of the synthetic home."""
    dst = tmp_path / "home"
    shutil.copytree(synth_template.root, dst)
    return Home.at(dst)
