"""Sticky canary choice: same key same arm, the right share, monotonic, process-stable."""

from __future__ import annotations

import subprocess
import sys

from lora_router.router.flags.state import Split
from lora_router.router.routing import bucket, choose
from tests.flags.conftest import make_state

KEYS = [f"user-{i}" for i in range(10_000)]


def _canary(percent: float) -> object:
    return make_state(canary=Split(adapter="support@v2", percent=percent))


def test_same_key_always_lands_on_the_same_arm() -> None:
    state = _canary(30)
    first = {k: choose(state, k).arm for k in KEYS[:500]}
    for _ in range(3):
        assert {k: choose(state, k).arm for k in KEYS[:500]} == first
    # a later version of the same split keeps every key where it was
    bumped = state.model_copy(update={"version": 9})  # type: ignore[attr-defined]
    assert {k: choose(bumped, k).arm for k in KEYS[:500]} == first


def test_ten_thousand_keys_at_20_percent_give_20_percent() -> None:
    state = _canary(20)
    decisions = [choose(state, k) for k in KEYS]
    share = sum(d.arm == "canary" for d in decisions) / len(KEYS)
    assert abs(share - 0.20) <= 0.015, share
    assert {d.adapter_id for d in decisions if d.arm == "canary"} == {"support@v2"}
    assert {d.adapter_id for d in decisions if d.arm == "live"} == {"support@v1"}
    assert {d.flag_version for d in decisions} == {state.version}  # type: ignore[attr-defined]


def test_raising_the_percent_only_moves_keys_from_live_to_canary() -> None:
    previous = {k: "live" for k in KEYS}
    for percent in (0, 1, 5, 20, 20.5, 50, 99, 100):
        state = _canary(percent)
        arms = {k: choose(state, k).arm for k in KEYS}
        moved_back = [k for k in KEYS if previous[k] == "canary" and arms[k] == "live"]
        assert moved_back == [], percent
        previous = arms
    assert set(previous.values()) == {"canary"}
    assert {choose(_canary(0), k).arm for k in KEYS} == {"live"}


def test_buckets_are_the_same_in_another_process() -> None:
    sample = KEYS[:200]
    code = (
        "import sys; from lora_router.router.routing import bucket; "
        "print(','.join(str(bucket('support', k)) for k in sys.argv[1:]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *sample],
        capture_output=True, text=True, check=True, timeout=60,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.strip()
    assert out.split(",") == [str(bucket("support", k)) for k in sample]


def test_shadow_is_sampled_by_its_percent_and_never_the_serving_adapter() -> None:
    state = make_state(shadow=Split(adapter="support@v2", percent=25))
    shadowed = [choose(state, k).shadow_adapter for k in KEYS]
    share = sum(s == "support@v2" for s in shadowed) / len(KEYS)
    assert abs(share - 0.25) <= 0.015
    assert all(choose(state, k).arm == "live" for k in KEYS[:100])
    same = make_state(
        canary=Split(adapter="support@v2", percent=100),
        shadow=Split(adapter="support@v2", percent=100),
    )
    assert {choose(same, k).shadow_adapter for k in KEYS[:100]} == {None}
