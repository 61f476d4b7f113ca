"""Shared fixtures: real Redis, real PostgreSQL, the demo home (built once per run).

Tests that need a service skip when it is absent, unless ``LORA_ROUTER_REQUIRE_SERVICES=1``
(set by ``.ci/run``), which turns such a skip into a failure. Only GPU and vLLM tests may
skip in CI.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest

from registry.home import Home

REDIS_URL = os.environ.get("LORA_ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_URL = os.environ.get("LORA_ROUTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def require(reason: str) -> None:
    """Skip for a missing service, or fail when CI demands every service."""
    if os.environ.get("LORA_ROUTER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis on a dedicated db index, flushed before and after each test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require(f"Redis not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A real PostgreSQL database with a fresh schema per test (dropped afterwards)."""
    import psycopg

    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        require(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    conn.close()


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """The demo home (tiny base, tokenizer, two adapters, cards, routes), built once per run.

    Read-only for tests: a test that changes files copies it first (``copy_home``).
    ``LORA_ROUTER_TEST_DEMO_HOME`` reuses an existing build (local iteration only).
    """
    from router.demo.build import build_demo

    reuse = os.environ.get("LORA_ROUTER_TEST_DEMO_HOME")
    if reuse:
        home = Home.at(reuse)
        if not home.base_lock.is_file():
            build_demo(home)
        return home
    home = Home.at(tmp_path_factory.mktemp("demo-home"))
    build_demo(home)
    return home


@pytest.fixture
def copy_home(demo_home: Home, tmp_path: Path) -> Home:
    """A private, writable copy of the demo home."""
    import shutil

    dst = tmp_path / "home"
    shutil.copytree(demo_home.root, dst, ignore=shutil.ignore_patterns("log"))
    return Home.at(dst)
