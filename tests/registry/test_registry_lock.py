"""The registry's file lock waits a bounded time (issue 9, defect 11): while another
process holds it, a taker gets ``RegistryLocked`` naming the holder instead of hanging, the
CLI answers in one line, and the route-change hook skips the card update without raising."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from lora_router.ground.errors import RegistryLocked
from lora_router.ground.home import Home
from lora_router.registry import store
from lora_router.registry.lifecycle import set_status
from lora_router.registry.store import registry_lock
from lora_router.router.flags.route_status import sync_route_status
from lora_router.router.flags.state import RouteState
from tests.registry.helpers import cli

HOLDER = textwrap.dedent("""
    import sys
    from lora_router.ground.home import Home
    from lora_router.registry.store import registry_lock

    with registry_lock(Home.at(sys.argv[1]), timeout=60):
        print("locked", flush=True)
        sys.stdin.readline()  # hold it until the test closes our stdin
""")


@pytest.fixture
def held(synth_home: Home) -> Iterator[subprocess.Popen[str]]:
    """A second process holding the registry lock of ``synth_home`` until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(synth_home.root)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.communicate("\n", timeout=30)


def test_a_held_lock_raises_registry_locked_naming_the_holder(
    synth_home: Home, held: subprocess.Popen[str]
) -> None:
    with pytest.raises(RegistryLocked) as info, registry_lock(synth_home, timeout=0.2):
        pytest.fail("took a lock another process holds")
    assert f"pid {held.pid}" in str(info.value)
    assert str(synth_home.registry_dir / ".lock") in str(info.value)
    assert info.value.status_code == 503


def test_a_registry_change_fails_in_one_line_while_the_lock_is_held(
    synth_home: Home, held: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 0.2)
    with pytest.raises(RegistryLocked):
        set_status(synth_home, "triage@v1", "registered", "test", "x")
    result = cli(synth_home, "set-status", "triage@v2", "registered", "--reason", "x")
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: the registry is locked by another process")
    assert f"pid {held.pid}" in line


def test_the_route_change_hook_skips_cards_instead_of_hanging(
    synth_home: Home, held: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 0.2)
    caplog.set_level(logging.WARNING)
    assert sync_route_status(synth_home, None, RouteState(route="r", live="triage@v2")) == []
    assert "registry is locked" in caplog.text


def test_the_lock_is_taken_again_once_the_holder_is_gone(
    synth_home: Home, held: subprocess.Popen[str]
) -> None:
    held.communicate("\n", timeout=30)
    with registry_lock(synth_home, timeout=5):
        pass
    card = set_status(synth_home, "triage@v1", "shadow", "test", "lock free again")
    assert card.status == "shadow"
