"""Who may call ``/admin/*``, and who the audit says called it.

- With an admin token (``LORA_ROUTER_ADMIN_TOKEN``) every call needs
  ``Authorization: Bearer <token>`` (401 otherwise); the principal is ``token``.
- Without one, only loopback clients are answered (403 for others, and for a proxied request:
  a local proxy makes every client look local); the principal is ``loopback``. ``serve
  --insecure-open-admin`` (``LORA_ROUTER_INSECURE_OPEN_ADMIN``) opens it to every client,
  principal ``open``.
- Always: the ``Host`` header must be localhost, 127.0.0.1, [::1], the bound host,
  ``public_url``'s host or one of ``LORA_ROUTER_ADMIN_ALLOWED_HOSTS`` ("*": any), else 403:
  a page on another site that rebinds its DNS name to this address cannot reach the API.

A name the caller sends (body ``actor`` or the ``x-lora-router-actor`` header) is not
authenticated: the audit records it as a claim, ``"loopback (claimed: alice)"``.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from pydantic import SecretStr

from registry.errors import LoraRouterError
from router.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


class AdminUnauthorized(LoraRouterError):
    """An /admin call without the right bearer token, while the gateway has one set."""

    status_code = 401
    code = "unauthorized"


class AdminForbidden(LoraRouterError):
    """An /admin call refused: a non-loopback client with no token set, or a Host header
    that is not one of this gateway's names (DNS rebinding)."""

    status_code = 403
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class AdminAccess:
    """The admin API's access rule (defaults: no token, loopback only, loopback names)."""

    token: SecretStr | None = None
    open_to_all: bool = False
    allowed_hosts: frozenset[str] = LOOPBACK_NAMES
    any_host: bool = False

    @classmethod
    def of(cls, settings: Settings) -> AdminAccess:
        hosts = set(LOOPBACK_NAMES) | {h.lower() for h in settings.admin_allowed_hosts}
        bound = settings.host.strip("[]").lower()
        if bound in _WILDCARDS:  # bound to every interface: the machine's own names too
            hosts.add(socket.gethostname().lower())
        else:
            hosts.add(bound)
        if settings.public_url:
            public = urlsplit(settings.public_url).hostname
            if public:
                hosts.add(public.lower())
        return cls(
            token=settings.admin_token,
            open_to_all=settings.insecure_open_admin,
            allowed_hosts=frozenset(hosts),
            any_host="*" in hosts,
        )

    def principal(self, request: Request) -> str:
        """Who is calling (``token``, ``loopback`` or ``open``); raises 401/403."""
        self._check_host(request.headers.get("host"))
        if self.token is not None:
            self._check_token(request.headers.get("authorization"))
            return "token"
        if self.open_to_all:
            return "open"
        client = request.client.host if request.client is not None else None
        if not _is_loopback(client) or any(h in request.headers for h in _PROXY_HEADERS):
            raise AdminForbidden(
                f"the admin API answers only loopback clients while no admin token is set "
                f"(client {client}): set LORA_ROUTER_ADMIN_TOKEN on the gateway and send "
                "'Authorization: Bearer <token>'"
            )
        return "loopback"

    def _check_host(self, host_header: str | None) -> None:
        if self.any_host:
            return
        host = _host_name(host_header or "")
        if host not in self.allowed_hosts:
            raise AdminForbidden(
                f"Host {host_header!r} is not allowed for the admin API (allowed: "
                f"{', '.join(sorted(self.allowed_hosts))}); add it to "
                "LORA_ROUTER_ADMIN_ALLOWED_HOSTS"
            )

    def _check_token(self, authorization: str | None) -> None:
        assert self.token is not None
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise AdminUnauthorized(
                "the admin API requires 'Authorization: Bearer <token>' "
                "(the gateway's LORA_ROUTER_ADMIN_TOKEN)"
            )
        expected = self.token.get_secret_value().encode()
        if not secrets.compare_digest(given.strip().encode(), expected):
            raise AdminUnauthorized("invalid admin token")


def actor_label(principal: str, claimed: str | None) -> str:
    """The audit's ``by``: the principal, with a caller-chosen name marked as a claim."""
    return f"{principal} (claimed: {claimed})" if claimed else principal


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _host_name(header: str) -> str:
    """The host part of a Host header value (no port, no IPv6 brackets), lower-case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header
