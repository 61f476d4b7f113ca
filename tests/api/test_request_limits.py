"""Request size limits over real HTTP: one large request never stalls the gateway.

The body is refused with 413 as soon as it passes ``max_body_bytes`` (or at once for a
``Content-Length`` over it) while ``/healthz`` keeps answering; a prompt over
``max_prompt_chars`` is refused before it is tokenised; a long prompt within the limit is
tokenised off the event loop; headers, ``user`` and ``x-route-key`` are bounded. Every
refusal names the limit and its value.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from lora_router.demo.task import format_prompt
from lora_router.router.completions import INLINE_TOKENIZE_CHARS
from tests.api.conftest import Gateway

MB = 1024 * 1024
UPLOAD_BYTES = 30 * MB
PROMPT = format_prompt("Where is my refund for the returned jacket?")


def post(gw: Gateway, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", timeout=60, **kw)


def assert_limit(r: httpx.Response, status: int, setting: str, value: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert setting in err["message"] and value in err["message"], err["message"]
    assert f"LORA_ROUTER_{setting.upper()}" in err["message"]
    return err


@pytest.fixture
def raw(gateway: Gateway) -> Iterator[socket.socket]:
    """A raw connection to the gateway (for bodies no HTTP client would send)."""
    parts = urlsplit(gateway.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    yield sock
    sock.close()


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the bytes read up to the end of the response head (or EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n")


def test_a_30mb_upload_is_refused_early_while_healthz_answers(
    gateway: Gateway, raw: socket.socket
) -> None:
    """Streamed without a Content-Length: refused once it passes the limit, not after."""
    answered = threading.Event()
    sent = {"total": 0, "at_answer": -1}

    def upload() -> None:
        piece = chunk(b"a" * 65536)
        try:
            raw.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            raw.sendall(chunk(b'{"model": "support-triage", "prompt": "'))
            while sent["total"] < UPLOAD_BYTES and not answered.is_set():
                raw.sendall(piece)
                sent["total"] += 65536
            if not answered.is_set():
                raw.sendall(chunk(b'"}') + b"0\r\n\r\n")
        except OSError:  # the server may close once it has answered
            pass

    status: dict[str, Any] = {}

    def read() -> None:
        status["code"], status["head"] = read_status(raw)
        sent["at_answer"] = sent["total"]
        answered.set()

    threads = [threading.Thread(target=upload), threading.Thread(target=read)]
    for t in threads:
        t.start()
    health = 0
    deadline = time.monotonic() + 120
    while any(t.is_alive() for t in threads):
        assert time.monotonic() < deadline, "the upload was neither refused nor finished"
        # each probe must be answered within its timeout while the upload is in flight
        assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
        health += 1
        time.sleep(0.02)
    assert status["code"] == 413, status
    assert health >= 1
    # the answer came before the upload was read: at most the limit plus socket buffers
    assert 0 <= sent["at_answer"] < UPLOAD_BYTES


def test_content_length_over_the_limit_is_413_before_any_body(
    gateway: Gateway, raw: socket.socket
) -> None:
    raw.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % UPLOAD_BYTES)  # and no body at all
    code, data = read_status(raw)
    assert code == 413
    data += raw.recv(65536)
    assert b"max_body_bytes" in data and b"4,194,304" in data


def test_a_prompt_over_the_limit_is_refused_before_tokenising(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = gateway.components.engine
    encoded: list[int] = []
    original = engine.encode
    monkeypatch.setattr(engine, "encode", lambda text: encoded.append(len(text)) or original(text))
    limit = gateway.components.settings.max_prompt_chars
    r = post(gateway, "/v1/completions",
             json={"model": "support-triage", "prompt": "x" * (limit + 1), "max_tokens": 2})
    err = assert_limit(r, 413, "max_prompt_chars", f"{limit:,}")
    assert (err["param"], err["code"]) == ("prompt", "limit_exceeded")
    half = "y" * (limit // 2 + 1)  # chat: the messages' text together, before rendering
    r = post(gateway, "/v1/chat/completions", json={
        "model": "support-triage", "max_tokens": 2,
        "messages": [{"role": "user", "content": half}, {"role": "user", "content": half}]})
    assert assert_limit(r, 413, "max_prompt_chars", f"{limit:,}")["param"] == "messages"
    assert encoded == []


def test_a_long_prompt_is_tokenised_off_the_event_loop(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = gateway.components.engine
    threads: list[str] = []
    original = engine.encode

    def spy(text: str) -> list[int]:
        threads.append(threading.current_thread().name)
        return original(text)

    monkeypatch.setattr(engine, "encode", spy)
    prompt = format_prompt("refund " * (INLINE_TOKENIZE_CHARS // 7 + 1))
    assert len(prompt) > INLINE_TOKENIZE_CHARS
    assert engine.count_tokens(prompt) + 2 <= engine.base.max_context
    r = post(gateway, "/v1/completions",
             json={"model": "support-triage", "prompt": prompt, "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == engine.count_tokens(prompt)
    assert threads and all(name.startswith("tokenize") for name in threads), threads


def test_oversized_headers_are_431_naming_the_limit(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/healthz", headers={"x-junk": "j" * (64 * 1024)}, timeout=30)
    err = assert_limit(r, 431, "max_header_bytes", "16,384")
    assert err["code"] == "header_too_large"
    r = httpx.get(f"{gateway.url}/v1/models?{'q' * 20_000}", timeout=30)  # the target counts
    assert_limit(r, 431, "max_header_bytes", "16,384")


def test_user_and_route_key_are_bounded(gateway: Gateway) -> None:
    body = {"model": "support-triage", "prompt": PROMPT, "max_tokens": 1}
    r = post(gateway, "/v1/completions", json=body, headers={"x-route-key": "k" * 257})
    assert assert_limit(r, 413, "max_user_chars", "256")["param"] == "x-route-key"
    r = post(gateway, "/v1/completions", json={**body, "user": "u" * 257})
    assert assert_limit(r, 413, "max_user_chars", "256")["param"] == "user"
    ok = post(gateway, "/v1/completions", json={**body, "user": "u" * 256},
              headers={"x-route-key": "k" * 256})
    assert ok.status_code == 200, ok.text


def test_unused_json_fields_count_against_the_body_limit(gateway: Gateway) -> None:
    body = {"model": "support-triage", "prompt": PROMPT, "max_tokens": 1,
            "junk": "z" * (5 * MB)}
    r = post(gateway, "/v1/completions", json=body)
    assert_limit(r, 413, "max_body_bytes", "4,194,304")
    # chunked (no Content-Length): counted as it arrives
    r = post(gateway, "/v1/completions", content=iter([b'{"junk": "', b"z" * (5 * MB), b'"}']),
             headers={"content-type": "application/json"})
    assert_limit(r, 413, "max_body_bytes", "4,194,304")
