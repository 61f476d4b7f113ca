"""ASGI middleware bounding what a request may make the gateway hold.

A request head over ``max_header_bytes`` (the target, i.e. path and query, plus every header
name and value) is answered 431 before the app runs. A body is bounded by
``max_body_bytes``: a ``Content-Length`` above it is answered 413 before a byte of the body
is read, and a body sent without one (chunked) is counted as it streams in and refused with
413 as soon as it passes the limit, so the gateway never buffers more than the limit (the
server discards the rest of the upload). Both answers use the API's error body and name the
limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lora_router.router.api.errors import error_object, error_response, new_request_id
from lora_router.router.limits import Limits, setting_name


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit (handled as a 413)."""

    code = "limit_exceeded"

    def __init__(self, limit: int) -> None:
        super().__init__(413, _body_message(limit))


def _body_message(limit: int, size: int | None = None) -> str:
    said = f" ({size:,} bytes)" if size is not None else ""
    return (f"request body{said} is over the limit of {limit:,} bytes "
            f"(max_body_bytes, env {setting_name('max_body_bytes')})")


class RequestLimits:
    """Refuse oversized headers (431) and bodies (413); see the module docstring."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.max_body = limits.max_body_bytes
        self.max_headers = limits.max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        length: bytes | None = None
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"content-length":
                length = value
        if size > self.max_headers:
            message = (f"request target and headers are {size:,} bytes, over the limit of "
                       f"{self.max_headers:,} bytes (max_header_bytes, env "
                       f"{setting_name('max_header_bytes')})")
            await _refuse(scope, receive, send, 431, "header_too_large", message)
            return
        if length is not None and length.isdigit() and int(length) > self.max_body:
            message = _body_message(self.max_body, int(length))
            await _refuse(scope, receive, send, 413, "limit_exceeded", message)
            return
        await self.app(scope, self._counted(receive), send)

    def _counted(self, receive: Receive) -> Receive:
        limit = self.max_body
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str,
                  message: str) -> None:
    obj = error_object(message, status, code, None, new_request_id())
    await error_response(status, obj)(scope, receive, send)
