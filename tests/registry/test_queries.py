"""Day-two questions: lineage, trained-on (the deletion request), base-impact."""

from __future__ import annotations

import json

import pytest

from lora_router.ground.errors import RecordNotFound
from lora_router.ground.home import Home
from lora_router.registry.base_pin import read_lock
from lora_router.registry.lineage import lineage
from lora_router.registry.trained_on import trained_on
from lora_router.router.flags.state import RouteState, Split
from tests.registry.helpers import cli


def test_lineage_tree_links_model_run_dataset_and_sources(synth_home: Home) -> None:
    tree = lineage(synth_home, "triage@v2")
    assert tree["model_card"]["trained_on"] == "tickets-v2"
    assert tree["run_manifest"]["id"] == "run-triage-v2"
    assert tree["dataset_card"]["id"] == "tickets-v2"
    assert [s["name"] for s in tree["dataset_card"]["sources"]] == [
        "prod_tickets_2025_2026", "synthetic_edge_cases_v2"]
    assert tree["rollback_chain"] == ["triage@v1"]
    result = cli(synth_home, "lineage", "triage@v2")
    assert result.exit_code == 0
    for text in ("model card triage@v2", "run manifest run-triage-v2",
                 "dataset card tickets-v2", "source prod_tickets_2025_2026"):
        assert text in result.output
    as_json = json.loads(cli(synth_home, "lineage", "triage@v2", "--json").stdout)
    assert as_json["dataset_card"]["hash"] == tree["dataset_card"]["hash"]


def test_lineage_of_unknown_adapter_fails_cleanly(synth_home: Home) -> None:
    result = cli(synth_home, "lineage", "nope@v1")
    assert result.exit_code == 2 and "no model card" in result.output


def test_trained_on_subject_yes_names_adapters_routes_and_exclusion(synth_home: Home) -> None:
    # CUST-10004 is in tickets-v1 only (v2 copies the rows of CUST-1000{1,2,3})
    answer = trained_on(synth_home, subject="cust-10004 ")  # normalised: case, spaces
    assert answer.found and answer.datasets == ["tickets-v1"]
    [hit] = answer.adapters
    assert hit.adapter_id == "triage@v1"
    assert [str(r) for r in hit.serving] == ["triage:live"]
    [excl] = answer.retrain_exclude
    assert excl.startswith("customer_id hmac-sha256:") and "tickets-v1" in excl
    result = cli(synth_home, "trained-on", "--subject", "CUST-10004")
    assert result.exit_code == 0
    assert "YES" in result.output and "triage@v1" in result.output
    assert "triage:live" in result.output


def test_trained_on_subject_in_both_datasets_lists_every_route_arm(synth_home: Home) -> None:
    out = json.loads(cli(synth_home, "trained-on", "--subject", "CUST-10002", "--json").stdout)
    assert out["answer"] == "yes" and out["datasets"] == ["tickets-v1", "tickets-v2"]
    serving = {a["adapter"]: [(s["route"], s["arm"], s["percent"]) for s in a["serving"]]
               for a in out["adapters"]}
    assert serving == {"triage@v1": [("triage", "live", None)],
                       "triage@v2": [("triage", "canary", 10.0), ("triage-es", "live", None)]}
    assert "CUST-10002" not in json.dumps(out)


def test_trained_on_absent_subject_says_no(synth_home: Home) -> None:
    answer = trained_on(synth_home, subject="CUST-99999")
    assert not answer.found and answer.adapters == [] and answer.retrain_exclude == []
    result = cli(synth_home, "trained-on", "--subject", "CUST-99999")
    assert result.exit_code == 0 and "NO" in result.output


def test_trained_on_source_and_dataset_with_given_routes(synth_home: Home) -> None:
    routes = {"x": RouteState(route="x", live="triage@v2",
                              shadow=Split(adapter="triage@v1", percent=50))}
    answer = trained_on(synth_home, source="prod_tickets_2023_2025", routes=routes)
    assert [(h.adapter_id, [str(r) for r in h.serving]) for h in answer.adapters] == [
        ("triage@v1", ["x:shadow 50%"])]
    assert answer.retrain_exclude == ["source prod_tickets_2023_2025 (in dataset tickets-v1)"]
    both = trained_on(synth_home, source="synthetic_edge_cases_v2")
    assert both.datasets == ["tickets-v1", "tickets-v2"]
    by_ds = trained_on(synth_home, dataset="tickets-v2")
    assert [h.adapter_id for h in by_ds.adapters] == ["triage@v2"]
    with pytest.raises(RecordNotFound, match="no dataset card lists source 'nowhere'"):
        trained_on(synth_home, source="nowhere")
    assert cli(synth_home, "trained-on").exit_code == 2


def test_base_impact_by_name_and_hash_prefix(synth_home: Home) -> None:
    pinned = read_lock(synth_home).sha256
    for query in ("tiny-llama", "tiny-llama@1", pinned, pinned[:19], pinned[7:20]):
        out = json.loads(cli(synth_home, "base-impact", query, "--json").stdout)
        assert [a["adapter"] for a in out["adapters"]] == ["triage@v1", "triage@v2"], query
        assert out["adapters"][0]["dataset"] == "tickets-v1"
        assert out["adapters"][0]["dataset_hash"].startswith("sha256:")
        assert out["adapters"][1]["serving"] == ["triage:canary 10%", "triage-es:live"]
    for unknown in ("other-base", "sha256:7"):  # sha256:7: too short a prefix matches nothing
        result = cli(synth_home, "base-impact", unknown, "--json")
        assert result.exit_code == 2 and "is no known base" in result.output
    result = cli(synth_home, "base-impact", "tiny-llama")
    assert result.exit_code == 0 and "2 adapter(s) tied to base tiny-llama" in result.output


def test_dataset_without_subject_manifest_answers_unknown_not_no(synth_home: Home) -> None:
    from tests.registry.helpers import edit_yaml

    edit_yaml(synth_home.dataset_card_path("tickets-v2"), subjects=None)
    absent = trained_on(synth_home, subject="CUST-99999")
    assert absent.answer == "unknown" and list(absent.unknown) == ["tickets-v2"]
    present = trained_on(synth_home, subject="CUST-10004")
    assert present.answer == "yes"
    result = cli(synth_home, "trained-on", "--subject", "CUST-99999")
    assert "UNKNOWN for tickets-v2" in result.output and "NO:" not in result.output
