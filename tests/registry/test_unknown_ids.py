"""An unknown id given to a registry command is said in one line, exit 2 (issue 11, point 8):
never "0 adapter(s) tied to base nope" or a "NO" that a typo produced, never a traceback."""

from __future__ import annotations

import pytest

from lora_router.ground.errors import RecordNotFound
from lora_router.ground.home import Home
from lora_router.registry.base_pin import read_lock
from lora_router.registry.questions import base_impact
from tests.registry.helpers import cli

UNKNOWN = [
    (["base-impact", "nope"], "'nope' is no known base"),
    (["base-impact", "sha256:7"], "is no known base"),
    (["lineage", "nope@v1"], "no model card for adapter 'nope@v1'"),
    (["lineage", "nope"], "invalid adapter id 'nope'"),
    (["trained-on", "--dataset", "nope"], "no dataset card 'nope'; known datasets: tickets-v1"),
    (["trained-on", "--source", "nope"],
     "no dataset card lists source 'nope'; known sources: prod_tickets_2023_2025"),
    (["retire", "nope@v1", "--reason", "x"], "no model card for adapter 'nope@v1'"),
    (["set-status", "nope@v1", "registered", "--reason", "x"], "no model card"),
    (["set-rollback", "nope@v1", "--none"], "no model card for adapter 'nope@v1'"),
    (["set-rollback", "triage@v2", "--to", "nope@v1"], "rollback target nope@v1 is not"),
    (["reproduce", "nope@v1"], "no model card for adapter 'nope@v1'"),
    (["export-hf", "nope@v1"], "no model card for adapter 'nope@v1'"),
    (["verify", "nope@v1"], "no model card for adapter 'nope@v1'"),
]


@pytest.mark.parametrize(("args", "message"), UNKNOWN, ids=lambda a: " ".join(a)
                         if isinstance(a, list) else "")
def test_an_unknown_id_is_one_line_exit_2(synth_home: Home, args: list[str],
                                          message: str) -> None:
    result = cli(synth_home, *args)
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert "Traceback" not in result.output


def test_an_unknown_base_names_the_known_ones(synth_home: Home) -> None:
    lock = read_lock(synth_home)
    with pytest.raises(RecordNotFound) as info:
        base_impact(synth_home, "nope")
    assert f"tiny-llama@1 ({lock.sha256})" in str(info.value)
    assert info.value.status_code == 404


def test_the_pinned_base_with_no_adapter_is_known_and_empty(synth_home: Home) -> None:
    for model_id in ("triage@v1", "triage@v2"):
        synth_home.model_card_path(model_id).unlink()
    impact = base_impact(synth_home, "tiny-llama")
    assert impact["adapters"] == [] and impact["pinned_base"] == read_lock(synth_home).sha256
    result = cli(synth_home, "base-impact", "tiny-llama@1")
    assert result.exit_code == 0 and "0 adapter(s) tied to base tiny-llama@1" in result.output
