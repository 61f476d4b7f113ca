"""`verify_adapter`: the load-time gate (files vs model card, base vs pin, status)."""

from __future__ import annotations

import pytest

from lora_router.ground.errors import (
    AdapterIntegrityError,
    AdapterNotFound,
    AdapterRetired,
    InvalidId,
)
from lora_router.ground.home import Home
from lora_router.registry.integrity import verify_adapter
from lora_router.registry.lifecycle import set_status
from tests.registry.helpers import cli, edit_yaml, flip_byte


def test_intact_adapter_passes_and_returns_its_card(synth_home: Home) -> None:
    card = verify_adapter(synth_home, "triage@v1")
    assert card.id == "triage@v1" and card.trained_on == "tickets-v1"
    assert cli(synth_home, "verify", "triage@v1").exit_code == 0


def test_tampered_weights_are_refused_naming_file_and_hashes(synth_home: Home) -> None:
    weights = synth_home.adapter_dir("triage@v1") / "adapter_model.safetensors"
    recorded = verify_adapter(synth_home, "triage@v1").adapter_files["adapter_model.safetensors"]
    flip_byte(weights, 200)
    with pytest.raises(AdapterIntegrityError) as exc:
        verify_adapter(synth_home, "triage@v1")
    assert exc.value.detail["file"] == "adapters/triage/v1/adapter_model.safetensors"
    assert exc.value.detail["expected"] == recorded
    assert exc.value.detail["found"] not in (None, recorded)
    assert exc.value.status_code == 422
    result = cli(synth_home, "verify", "triage@v1")
    assert result.exit_code == 2 and "adapter_model.safetensors" in result.output


def test_unrecorded_weights_file_is_refused_but_a_readme_is_not(synth_home: Home) -> None:
    adir = synth_home.adapter_dir("triage@v2")
    (adir / "README.md").write_text("notes")
    verify_adapter(synth_home, "triage@v2")
    (adir / "extra.safetensors").write_bytes(b"\0" * 8)
    with pytest.raises(AdapterIntegrityError, match=r"extra\.safetensors"):
        verify_adapter(synth_home, "triage@v2")


def test_card_on_another_base_is_refused(synth_home: Home) -> None:
    edit_yaml(synth_home.model_card_path("triage@v1"), base_model__hash="sha256:" + "1" * 64)
    with pytest.raises(AdapterIntegrityError, match="pinned base"):
        verify_adapter(synth_home, "triage@v1")


def test_unregistered_and_retired_and_missing(synth_home: Home) -> None:
    with pytest.raises(AdapterNotFound):
        verify_adapter(synth_home, "nope@v1")
    with pytest.raises(InvalidId):
        verify_adapter(synth_home, "../../etc@v1")
    set_status(synth_home, "triage@v2", "retired", "test", "gone", routes={})
    with pytest.raises(AdapterRetired):
        verify_adapter(synth_home, "triage@v2")
    import shutil

    shutil.rmtree(synth_home.adapter_dir("triage@v1"))
    with pytest.raises(AdapterNotFound):
        verify_adapter(synth_home, "triage@v1")
