"""The registry's acceptance on the real demo home (built by ``demo.build``).

Each test that changes files works on a private copy (``copy_home``).
"""

from __future__ import annotations

import json

import pytest
import yaml

from lora_router.ground.errors import AdapterRetired
from lora_router.ground.home import Home
from lora_router.registry.integrity import Problem, verify_adapter
from lora_router.registry.lifecycle import (
    assert_routable,
    references,
    retire,
    set_rollback_target,
    set_status,
)
from lora_router.registry.lineage import validate
from lora_router.registry.store import RegistryStore
from lora_router.registry.trained_on import trained_on
from lora_router.router.flags.route_status import sync_route_status
from lora_router.router.flags.state import load_routes_file
from lora_router.training.reproduce import reproduce
from tests.registry.helpers import cli, edit_yaml, flip_byte

ADAPTER = "support-triage@v1"


def _errors(home: Home) -> list[Problem]:
    return [p for p in validate(home) if p.severity == "error"]


def _spanish_customer(home: Home, split: str = "train") -> str:
    """A customer with a Spanish ticket in ``split`` of the adapter's dataset."""
    dataset = RegistryStore(home).get_model_card(ADAPTER).trained_on
    path = home.dataset_dir(dataset) / f"{split}.jsonl"
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("language") == "es":
            return str(row["customer_id"])
    raise AssertionError(f"no Spanish ticket in {path}")


def _raw_routes(home: Home) -> dict[str, dict]:
    return (yaml.safe_load(home.routes_file.read_text()) or {}).get("routes", {})


def test_fresh_demo_home_validates_clean(demo_home: Home) -> None:
    assert _errors(demo_home) == []
    result = cli(demo_home, "validate")
    assert result.exit_code == 0, result.output


def test_one_byte_of_an_adapter_file_changed(copy_home: Home) -> None:
    flip_byte(copy_home.adapter_dir(ADAPTER) / "adapter_model.safetensors", 1000)
    result = cli(copy_home, "validate")
    assert result.exit_code == 1
    assert f"model card {ADAPTER}: adapter file bytes differ from the card; " \
        "file adapters/support-triage/v1/adapter_model.safetensors; expected sha256:" \
        in result.output


def test_a_dataset_file_changed(copy_home: Home) -> None:
    dataset = RegistryStore(copy_home).get_model_card(ADAPTER).trained_on
    path = sorted(p for p in copy_home.dataset_dir(dataset).rglob("*") if p.is_file())[0]
    path.write_bytes(path.read_bytes() + b"\n")
    rel = path.relative_to(copy_home.root).as_posix()
    [p] = [p for p in _errors(copy_home) if p.kind == "dataset_file_changed"]
    assert (p.card, p.path) == (f"dataset card {dataset}", rel)
    result = cli(copy_home, "validate")
    assert result.exit_code == 1 and rel in result.output


def test_a_model_card_pointing_at_a_missing_dataset_card(copy_home: Home) -> None:
    edit_yaml(copy_home.model_card_path(ADAPTER), trained_on="no-such-dataset")
    [p] = _errors(copy_home)
    assert p.kind == "link_unresolved" and p.card == f"model card {ADAPTER}"
    result = cli(copy_home, "validate")
    assert result.exit_code == 1
    assert "dataset card 'no-such-dataset' does not exist" in result.output


def test_a_rollback_target_on_another_base(copy_home: Home) -> None:
    store = RegistryStore(copy_home)
    cards = [store.get_model_card(i) for i in store.list_model_ids()]
    with_target = [c for c in cards if c.rollback_target]
    if with_target:
        card, target = with_target[0].id, with_target[0].rollback_target
    else:  # point one adapter at another to have a rollback target to break
        card, target = cards[1].id, cards[0].id
        set_rollback_target(copy_home, card, target)
        assert _errors(copy_home) == []
    assert target is not None
    edit_yaml(copy_home.model_card_path(target), base_model__hash="sha256:" + "e" * 64)
    kinds = {(p.kind, p.card) for p in _errors(copy_home)}
    assert ("rollback_other_base", f"model card {card}") in kinds
    result = cli(copy_home, "validate")
    assert result.exit_code == 1
    assert f"rollback_target {target} is on another base" in result.output


def test_trained_on_a_spanish_ticket_customer_is_yes_with_routes(demo_home: Home) -> None:
    customer = _spanish_customer(demo_home)
    answer = trained_on(demo_home, subject=customer)
    assert answer.answer == "yes"
    hits = {h.adapter_id: h for h in answer.adapters}
    assert ADAPTER in hits  # in train (old demo homes: split not recorded, counted in)
    assert hits[ADAPTER].splits in ([("train", "weights")], [(None, "unknown")])
    routes = _raw_routes(demo_home)
    expected = sorted(name for name, r in routes.items() if r.get("live") == ADAPTER)
    assert sorted(r.route for r in hits[ADAPTER].serving if r.arm == "live") == expected
    # hmac-sha256 on a fresh build; sha256 (salted) on a demo home built before keyed manifests
    assert all(e.startswith(("customer_id hmac-sha256:", "customer_id sha256:"))
               for e in answer.retrain_exclude)
    result = cli(demo_home, "trained-on", "--subject", customer)
    assert result.exit_code == 0 and "YES" in result.output and ADAPTER in result.output
    for name in expected:
        assert f"{name}:live" in result.output


def test_trained_on_a_test_split_customer_is_not_in_the_weights(demo_home: Home) -> None:
    customer = _spanish_customer(demo_home, "test")  # customers are split whole (by entity)
    answer = trained_on(demo_home, subject=customer)
    manifest = RegistryStore(demo_home).get_dataset_card(answer.datasets[0]).subjects
    assert manifest is not None
    out = " ".join(cli(demo_home, "trained-on", "--subject", customer).output.split())
    if manifest.splits is None:  # a demo home built before per-split manifests: conservative
        assert answer.answer == "yes" and "records no split membership" in answer.notes[0]
        assert "note:" in out
        return
    assert answer.answer == "no" and answer.retrain_exclude == []
    assert answer.summary == "not in the weights (test split only)"
    assert {h.adapter_id for h in answer.adapters} >= {ADAPTER}
    assert all(h.splits == [("test", "unused")] for h in answer.adapters)
    assert "NO: not in the weights (test split only)" in out and "YES" not in out


def test_trained_on_an_absent_subject_is_no(demo_home: Home) -> None:
    answer = trained_on(demo_home, subject="CUST-00000-not-a-customer")
    assert answer.answer == "no" and answer.adapters == []
    result = cli(demo_home, "trained-on", "--subject", "CUST-00000-not-a-customer")
    assert "NO:" in result.output


# a full demo training run (~35 s on 2 idle cores; minutes when the cores are shared)
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_reproduce_support_triage_v1_is_identical(demo_home: Home) -> None:
    result = cli(demo_home, "reproduce", ADAPTER, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["identical"] is True and out["new_hash"] == out["recorded_hash"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_reproduce_with_a_changed_seed_differs(demo_home: Home) -> None:
    recorded = RegistryStore(demo_home).get_run_manifest(
        RegistryStore(demo_home).get_model_card(ADAPTER).run_manifest).seed
    other = reproduce(demo_home, ADAPTER, seed=recorded + 1)
    assert not other.identical and other.seed == recorded + 1
    assert other.files["adapter_model.safetensors"]["new"] != \
        other.files["adapter_model.safetensors"]["recorded"]


def test_retire_refused_while_referenced_then_succeeds_and_is_final(copy_home: Home) -> None:
    routes = _raw_routes(copy_home)
    referenced = sorted({a for r in routes.values() for a in (
        r.get("live"), r.get("rollback_target"), (r.get("canary") or {}).get("adapter"),
        (r.get("shadow") or {}).get("adapter")) if a})
    victim = next((a for a in referenced if a != ADAPTER), referenced[0])
    with pytest.raises(Exception, match="still referenced"):
        retire(copy_home, victim, "superseded")
    result = cli(copy_home, "retire", victim, "--reason", "superseded")
    assert result.exit_code == 2 and "still referenced" in result.output
    # move every route away from the victim (edit routes.yaml in the copy)
    keep = next(a for a in RegistryStore(copy_home).list_model_ids() if a != victim)
    for r in routes.values():
        if r.get("live") == victim:
            r["live"] = keep
        if r.get("rollback_target") == victim:
            r["rollback_target"] = None
        for arm in ("canary", "shadow"):
            if (r.get(arm) or {}).get("adapter") == victim:
                r[arm] = None
    before = load_routes_file(copy_home.routes_file)
    copy_home.routes_file.write_text(yaml.safe_dump({"routes": routes}))
    after = load_routes_file(copy_home.routes_file)
    for ref in references(copy_home, victim):  # model cards naming it as rollback target
        set_rollback_target(copy_home, ref.split()[2].split(":")[0], None)
    # nothing names it any more, but its card still says it serves (no gateway has seen
    # the change): refused on the card status
    if RegistryStore(copy_home).get_model_card(victim).status in ("shadow", "canary", "live"):
        result = cli(copy_home, "retire", victim, "--reason", "superseded")
        assert result.exit_code == 2 and "on a route (card status" in result.output
    for name, state in after.items():  # what a gateway does on each committed change
        sync_route_status(copy_home, before.get(name), state, all_states=after)
    result = cli(copy_home, "retire", victim, "--reason", "superseded")
    assert result.exit_code == 0, result.output
    with pytest.raises(AdapterRetired):
        assert_routable(copy_home, victim)
    with pytest.raises(AdapterRetired):
        set_status(copy_home, victim, "live", "test", "make it live again")
    with pytest.raises(AdapterRetired):
        verify_adapter(copy_home, victim)
    assert _errors(copy_home) == []
