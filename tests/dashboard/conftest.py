"""A real gateway for the dashboard tests: uvicorn on a free port over a private copy of the
demo home, with the real inference log (SQLite, in the copy) and the real key store."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.auth.factory import build_key_store
from lora_router.router.auth.roles import Role
from lora_router.router.auth.store import create_key
from lora_router.router.settings import Settings
from tests.api.conftest import Served, serve_app
from tests.conftest import free_port

T = TypeVar("T")
ROUTE = "support-triage"
V1, V2 = "support-triage@v1", "support-triage@v2"


@dataclass
class Gateway:
    url: str
    home: Home
    served: Served

    def client(self, key: str | None = None, **headers: str) -> httpx.Client:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> None:
        self.served.stop()


def start_gateway(home: Home, **settings: Any) -> Gateway:
    """The gateway on ``home``; ``/v1`` needs no key (as the demo home's access.yaml says)."""
    s = Settings(home=home.root, port=free_port(), require_app_key=False, **settings)
    return Gateway(f"http://{s.host}:{s.port}", home, serve_app(create_app(s), s.host, s.port))


def private_home(src: Home, dst: Path) -> Home:
    """A writable copy of the demo home without a served home's state (log, flags, keys)."""
    shutil.copytree(src.root, dst, ignore=shutil.ignore_patterns("log", "flags", "auth"))
    return Home.at(dst)


def new_key(home: Home, role: str, name: str) -> str:
    """An API key in the home's key store (as ``lora-router keys create`` makes one)."""

    async def create() -> str:
        store = build_key_store(Settings(home=home.root))
        try:
            _, token = await create_key(store, role=Role(role), name=name, by="test")
            return token
        finally:
            await store.close()

    return asyncio.run(create())


def tickets(home: Home, per_language: int) -> list[dict[str, str]]:
    """Held-out demo tickets, ``per_language`` in English and in Spanish, alternating."""
    rows = [json.loads(line) for line in
            (home.root / "data" / "support-tickets-v1" / "test.jsonl").read_text().splitlines()]
    en = [r for r in rows if r["language"] == "en"][:per_language]
    es = [r for r in rows if r["language"] == "es"][:per_language]
    return [t for pair in zip(en, es, strict=True) for t in pair]


def serve_tickets(client: httpx.Client, batch: list[dict[str, str]]) -> list[httpx.Response]:
    """Each ticket through the route, then its outcome through ``/v1/feedback``."""
    answers = []
    for i, t in enumerate(batch):
        r = client.post("/v1/completions", headers={"x-route-key": f"user-{i}"}, json={
            "model": ROUTE, "prompt": f"Ticket: {t['text']}\nCategory:", "max_tokens": 6})
        assert r.status_code == 200, r.text
        answer = r.json()["choices"][0]["text"].strip()
        fb = client.post("/v1/feedback", json={"request_id": r.json()["id"],
                                                "was_correct": answer == t["label"]})
        assert fb.status_code == 200, fb.text
        answers.append(r)
    return answers


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """``check()``'s first truthy value, polled until ``timeout`` (then fail with ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def module_home(demo_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    yield private_home(demo_home, tmp_path_factory.mktemp("dashboard") / "home")
