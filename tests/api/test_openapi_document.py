"""The OpenAPI document declares every answer the API gives, with the error body's schema,
and ``/metrics`` as Prometheus text (the fuzz run in ``test_openapi_fuzz`` checks that the
gateway's actual answers stay within these declarations)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Gateway

EXPECTED: dict[tuple[str, str], set[int]] = {
    ("post", "/v1/completions"): {200, 400, 404, 413, 422, 431, 503, 504},
    ("post", "/v1/chat/completions"): {200, 400, 404, 413, 422, 431, 503, 504},
    ("get", "/v1/models"): {200, 431},
    ("get", "/v1/models/{model_id}"): {200, 404, 431},
    ("post", "/v1/feedback"): {200, 400, 404, 413, 422, 431, 503},
    ("get", "/healthz"): {200, 431},
    ("get", "/readyz"): {200, 431, 503},
    ("get", "/metrics"): {200, 431},
    ("get", "/admin/routes"): {200, 401, 403, 431},
    ("get", "/admin/routes/{route}"): {200, 401, 403, 404, 431},
    ("get", "/admin/routes/{route}/audit"): {200, 401, 403, 422, 431},
    **{("post", f"/admin/routes/{{route}}/{action}"): {200, 401, 403, 404, 409, 413, 422, 503}
       for action in ("rollback", "canary", "shadow", "promote", "set-live", "set-policy",
                      "clear-policy")},
}


@pytest.fixture(scope="module")
def document(gateway: Gateway) -> dict[str, Any]:
    r = httpx.get(f"{gateway.url}/openapi.json", timeout=30)
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def test_every_operation_declares_its_answers(document: dict[str, Any]) -> None:
    operations = {(m, p): op for p, ops in document["paths"].items() for m, op in ops.items()}
    assert set(EXPECTED) <= set(operations)
    for key, statuses in EXPECTED.items():
        declared = {int(s) for s in operations[key]["responses"]}
        assert statuses <= declared, (key, sorted(statuses - declared))


def test_error_answers_carry_the_error_body_schema(document: dict[str, Any]) -> None:
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if int(status) < 400 or (path == "/readyz" and status == "503"):
                    continue
                schema = answer["content"]["application/json"]["schema"]
                error = schema["properties"]["error"]
                assert {"message", "type", "param", "code", "request_id"} <= set(
                    error["required"]), (method, path, status)


def test_completions_declare_json_and_event_stream(document: dict[str, Any]) -> None:
    for path in ("/v1/completions", "/v1/chat/completions"):
        ok = document["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(ok) == {"application/json", "text/event-stream"}
        assert {"id", "model", "choices", "usage"} <= set(
            ok["application/json"]["schema"]["required"])


def test_completions_declare_who_served_them_in_headers(document: dict[str, Any]) -> None:
    for path in ("/v1/completions", "/v1/chat/completions"):
        headers = document["paths"][path]["post"]["responses"]["200"]["headers"]
        assert {h for h, d in headers.items() if d["required"]} == {
            "x-request-id", "x-model-id", "x-route-arm"}
        assert {h for h, d in headers.items() if not d["required"]} == {
            "x-route", "x-flag-version", "x-policy-version"}
        assert headers["x-route-arm"]["schema"]["enum"] == ["live", "canary", "pinned", "base"]


def test_metrics_is_declared_as_text(document: dict[str, Any], gateway: Gateway) -> None:
    ok = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(ok) == ["text/plain"]
    r = httpx.get(f"{gateway.url}/metrics", timeout=30)
    assert r.headers["content-type"].startswith("text/plain")
