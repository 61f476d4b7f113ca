"""A gateway on a writable home: an oversized admin ``reason`` changes nothing, anywhere.

The issue's case: a 20 MB reason was accepted and copied into the model cards' history,
after which every route change took seconds. Now the reason is refused (413 naming the
limit) before the change: the route, its audit and the model cards stay byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lora_router.ground.home import Home
from lora_router.router.settings import Settings
from tests.api.conftest import Gateway, adapter_ids, start_gateway
from tests.conftest import free_port

MB = 1024 * 1024


@pytest.fixture
def home_gateway(copy_home: Home) -> Iterator[Gateway]:
    gw = start_gateway(Settings(home=copy_home.root, port=free_port()))
    yield gw
    gw.stop()


def cards(home: Home) -> dict[str, bytes]:
    root = home.root / "registry" / "models"
    return {p.name: p.read_bytes() for p in sorted(Path(root).glob("*.yaml"))}


def test_an_oversized_reason_is_refused_and_nothing_is_written(
    home_gateway: Gateway, copy_home: Home
) -> None:
    _, v2 = adapter_ids(copy_home)
    url = f"{home_gateway.url}/admin/routes/support-triage"
    before_cards = cards(copy_home)
    before_audit = httpx.get(f"{url}/audit", timeout=30).json()["entries"]
    for reason, setting, value in (("r" * 1001, "max_reason_chars", "1,000"),
                                   ("r" * (20 * MB), "max_body_bytes", "4,194,304")):
        r = httpx.post(f"{url}/set-live", json={"adapter": v2, "reason": reason}, timeout=60)
        assert r.status_code == 413, r.text[:300]
        message = r.json()["error"]["message"]
        assert setting in message and value in message, message
    shown = httpx.get(url, timeout=30).json()
    assert (shown["version"], shown["live"]) == (before_audit[-1]["version"], before_audit[-1]
                                                 ["after"]["live"])
    assert httpx.get(f"{url}/audit", timeout=30).json()["entries"] == before_audit
    assert cards(copy_home) == before_cards


def test_a_change_records_who_made_it_as_a_claim(home_gateway: Gateway, copy_home: Home) -> None:
    _, v2 = adapter_ids(copy_home)
    url = f"{home_gateway.url}/admin/routes/support-triage"
    r = httpx.post(f"{url}/set-live", json={"adapter": v2, "reason": "v2 is better"},
                   headers={"x-lora-router-actor": "alice"}, timeout=120)
    assert r.status_code == 200, r.text
    entries = httpx.get(f"{url}/audit", timeout=30).json()["entries"]
    assert entries[-1]["by"] == "loopback (claimed: alice)"
    assert entries[-1]["reason"] == "v2 is better"
