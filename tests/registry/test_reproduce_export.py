"""`reproduce` (bit-for-bit retrain from the run manifest) and `export-hf`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lora_router.ground.home import Home
from lora_router.registry.hf_export import export_hf
from lora_router.registry.integrity import verify_adapter
from lora_router.registry.lineage import validate
from lora_router.training.reproduce import reproduce
from tests.registry.helpers import cli


def test_reproduce_gives_identical_bytes_and_a_new_seed_differs(synth_home: Home) -> None:
    same = reproduce(synth_home, "triage@v1")
    assert same.identical and same.seed == same.recorded_seed == 7
    assert all(f["recorded"] == f["new"] for f in same.files.values())
    other = reproduce(synth_home, "triage@v1", seed=8)
    assert not other.identical and other.seed == 8
    assert other.files["adapter_model.safetensors"]["recorded"] != \
        other.files["adapter_model.safetensors"]["new"]
    assert other.files["adapter_config.json"]["recorded"] == \
        other.files["adapter_config.json"]["new"]


def test_reproduce_cli_exit_codes(synth_home: Home) -> None:
    ok = cli(synth_home, "reproduce", "triage@v2", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["identical"] is True
    diff = cli(synth_home, "reproduce", "triage@v2", "--seed", "99")
    assert diff.exit_code == 1 and "DIFFERENT" in diff.output


def _front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_export_hf_writes_hub_metadata_into_the_adapter_dir(synth_home: Home) -> None:
    result = cli(synth_home, "export-hf", "triage@v2")
    assert result.exit_code == 0, result.output
    readme = synth_home.adapter_dir("triage@v2") / "README.md"
    meta = _front_matter(readme)
    assert meta["base_model"] == "tiny-llama"
    assert meta["base_model_relation"] == "adapter" and meta["library_name"] == "peft"
    assert meta["datasets"] == ["tickets-v2"] and "lora" in meta["tags"]
    [index] = meta["model-index"]
    assert index["name"] == "triage@v2"
    overall, es = index["results"]
    assert {m["type"]: m["value"] for m in overall["metrics"]} == {"task_f1": 0.91,
                                                                    "format": 0.99}
    assert es["dataset"]["config"] == "es" and es["metrics"][0]["value"] == 0.87
    assert meta["lora_router"]["adapter_hash"] == verify_adapter(synth_home, "triage@v2") \
        .adapter_hash
    assert "## Intended use" in readme.read_text()
    # the README is not part of the adapter's identity: still valid and loadable
    assert validate(synth_home) == []


def test_export_hf_to_another_dir(synth_home: Home, tmp_path: Path) -> None:
    path = export_hf(synth_home, "triage@v1", tmp_path / "hub")
    assert path == tmp_path / "hub" / "README.md"
    assert _front_matter(path)["model-index"][0]["name"] == "triage@v1"
