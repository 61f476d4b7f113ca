"""Acceptance: the on-call person rolls back a canary from the dashboard, in a real browser.

Headless Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it) driven by
Playwright's Python package, against a real gateway (uvicorn on a free port) over a private
copy of the demo home with API keys. A release key puts v2 on a canary through the admin
API; the dashboard, opened with alice's on-call key, shows it; alice clicks Roll back,
gives a reason, confirms, and sees the route on v1 at the next flag version. The same flip
is then in ``lora-router audit support-triage`` under ``key:alice``, and a request served
afterwards is answered by v1. The test saves the page in its tmp dir, and as the README's
``docs/dashboard.png`` when ``LORA_ROUTER_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from lora_router.ground.home import Home
from tests.conftest import require
from tests.dashboard.conftest import (
    ROUTE,
    V1,
    V2,
    Gateway,
    new_key,
    serve_tickets,
    start_gateway,
    tickets,
)

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
REASON = "INC-42: canary v2 misroutes Spanish tickets"
WAIT_MS = 30_000  # the page polls every 2 s; a loaded CI machine may be slow to answer


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        require("chromium is not installed (apt-get install -y chromium)")
    assert found is not None
    return found


@pytest.fixture
def gateway(copy_home: Home) -> tuple[Gateway, str, int]:
    """The demo route with v2 on a canary (set by a release key through the admin API),
    some labelled traffic to chart, and alice's on-call key."""
    alice = new_key(copy_home, "oncall", "alice")
    release = new_key(copy_home, "oncall", "release-bot")
    gw = start_gateway(copy_home)
    try:
        with gw.client(release) as c:
            r = c.post(f"/admin/routes/{ROUTE}/canary", json={
                "adapter": V2, "percent": 50, "reason": "canary v2 on half the tickets"})
            assert r.status_code == 200, r.text
            version = r.json()["state"]["version"]
        with gw.client() as c:
            serve_tickets(c, tickets(copy_home, per_language=8))
    except BaseException:
        gw.stop()
        raise
    return gw, alice, version


def roll_back_in_the_browser(page: Page, url: str, key: str, version: int) -> None:
    page.goto(f"{url}/dashboard")
    page.fill("#key-input", key)
    page.click("#key-use")
    expect(page.locator("#viewer")).to_have_text("acting as key:alice (oncall)", timeout=WAIT_MS)
    card = page.locator(f'article.route[data-route="{ROUTE}"]')
    expect(card.locator("[data-field=canary]")).to_have_text(f"{V2} · 50%", timeout=WAIT_MS)
    expect(card.locator("[data-field=live]")).to_have_text(V1)
    expect(card.locator("[data-field=version]")).to_have_text(f"flag version {version}")

    card.get_by_role("button", name="Roll back…").click()
    dialog = page.locator("#rollback-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Continue").click()  # no reason yet: refused
    expect(dialog.locator("#rb-error")).to_have_text("A reason is required.")
    dialog.locator("#rb-reason").fill(REASON)
    dialog.get_by_role("button", name="Continue").click()
    expect(dialog.locator("#rb-confirm-text")).to_contain_text("as key:alice? Stops the canary")
    dialog.get_by_role("button", name="Confirm rollback").click()
    expect(dialog).to_be_hidden(timeout=WAIT_MS)

    expect(card.locator("[data-field=live]")).to_have_text(V1, timeout=WAIT_MS)
    expect(card.locator("[data-field=canary]")).to_have_text("none")
    expect(card.locator("[data-field=version]")).to_have_text(f"flag version {version + 1}")
    expect(page.locator("#banner")).to_contain_text(
        f"Rolled back {ROUTE}: flag version {version + 1}, live {V1}")
    audit_row = card.locator(f'tr[data-version="{version + 1}"]')  # from the next poll
    expect(audit_row).to_contain_text("key:alice", timeout=WAIT_MS)
    expect(audit_row).to_contain_text(REASON)
    expect(page.locator(f'article.model[data-model="{V1}"]')).to_be_visible(timeout=WAIT_MS)


def test_rollback_from_the_dashboard_in_a_real_browser(
        gateway: tuple[Gateway, str, int], tmp_path: Path) -> None:
    gw, alice, version = gateway
    update = os.environ.get("LORA_ROUTER_UPDATE_SCREENSHOT") == "1"
    screenshot = README_SCREENSHOT if update else tmp_path / "dashboard.png"
    browser_path = chromium()
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("pageerror", lambda e: errors.append(str(e)))
                roll_back_in_the_browser(page, gw.url, alice, version)
                screenshot.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
                shrink_png(screenshot)
            finally:
                browser.close()
        assert errors == []

        audit = cli_audit(gw, alice)
        flip = audit[-1]
        assert (flip["version"], flip["by"], flip["action"], flip["reason"]) == (
            version + 1, "key:alice", "rollback", REASON)
        assert (flip["before"]["canary"]["adapter"], flip["after"]["canary"]) == (V2, None)
        assert flip["after"]["live"] == V1

        with gw.client() as c:  # served afterwards: v1, at the new flag version, every key
            for i in range(6):
                r = c.post("/v1/completions", headers={"x-route-key": f"user-{i}"}, json={
                    "model": ROUTE, "prompt": "Ticket: I was charged twice.\nCategory:",
                    "max_tokens": 3})
                assert r.status_code == 200, r.text
                assert r.headers["x-model-id"] == V1
                assert r.headers["x-flag-version"] == str(version + 1)
    finally:
        gw.stop()


def shrink_png(path: Path) -> None:
    """128 colours, optimised: a page of text and lines stays legible at a third the size."""
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE)
    small.save(path, optimize=True)


def cli_audit(gw: Gateway, key: str) -> list[dict[str, Any]]:
    """``lora-router audit support-triage --url ... --json`` with the key (as a person runs
    it: ``LORA_ROUTER_API_KEY``)."""
    cli = Path(sys.executable).with_name("lora-router")
    env = {**os.environ, "LORA_ROUTER_API_KEY": key}
    done = subprocess.run(
        [str(cli), "audit", ROUTE, "--url", gw.url, "--home", str(gw.home.root), "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["route"] == ROUTE
    entries: list[dict[str, Any]] = out["entries"]  # oldest first
    return entries
