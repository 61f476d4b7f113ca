"""Errors as OpenAI-style JSON: ``{"error": {"message", "type", "param", "code"}}``.

One handler maps every :class:`~ground.errors.LoraRouterError` to HTTP through its
class-level ``status_code``; FastAPI's body validation becomes 422 naming the field; anything
unexpected becomes 500 with the request id (and is logged). Every error response carries the
request id in its body and in ``x-request-id``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from lora_router.ground.errors import LoraRouterError

log = logging.getLogger(__name__)

JSON = "application/json"


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def request_id_of(request: Request, exc: LoraRouterError | None = None) -> str:
    """The id the endpoint gave this request, or a fresh one (the body never got that far)."""
    rid = getattr(request.state, "request_id", None)
    if rid is None and exc is not None:
        rid = exc.detail.get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


def error_object(
    message: str, status: int, code: str, param: str | None, request_id: str
) -> dict[str, Any]:
    return {
        "message": message,
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": param,
        "code": code,
        "request_id": request_id,
    }


def project_error_object(exc: LoraRouterError, request_id: str) -> dict[str, Any]:
    param = exc.detail.get("param")
    obj = error_object(
        exc.message, exc.status_code, exc.code, param if isinstance(param, str) else None,
        request_id,
    )
    valid = exc.detail.get("valid")
    if isinstance(valid, list):
        obj["valid_models"] = valid
    return obj


def error_response(status: int, obj: dict[str, Any]) -> Response:
    return Response(
        to_json({"error": obj}),
        status_code=status,
        media_type=JSON,
        headers={"x-request-id": obj["request_id"]},
    )


async def _project_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoraRouterError)
    rid = request_id_of(request, exc)
    if exc.status_code >= 500:
        log.warning("request %s failed: %s: %s", rid, exc.code, exc.message)
    return error_response(exc.status_code, project_error_object(exc, rid))


def _field(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "header", "path"):
        parts = parts[1:]
    return ".".join(parts) or None


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return error_response(422, error_object("invalid request", 422, "invalid_body", None,
                                                request_id_of(request)))
    messages = []
    for err in errors:
        field = _field(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            field = None
            messages.append(f"body is not valid JSON: {err.get('msg')}")
        else:
            messages.append(f"{field or 'body'}: {err.get('msg')}")
    first = _field(errors[0].get("loc", ())) if errors[0].get("type") != "json_invalid" else None
    obj = error_object("; ".join(messages), 422, "invalid_body", first, request_id_of(request))
    return error_response(422, obj)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or f"http_{exc.status_code}"
    obj = error_object(str(exc.detail), exc.status_code, code, None, request_id_of(request))
    response = error_response(exc.status_code, obj)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    rid = request_id_of(request)
    log.error("unexpected error on request %s", rid, exc_info=exc)
    obj = error_object(f"internal error (request {rid})", 500, "internal_error", None, rid)
    return error_response(500, obj)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LoraRouterError, _project_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
