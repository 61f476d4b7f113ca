"""The access rules of one gateway, fixed at start: :class:`AccessRules`.

They are the admin API's rule without keys (:class:`AdminAccess`: which ``Host`` names it
answers, the admin token, whether keyless calls are open to every client), the API key ring,
and whether ``/v1`` needs a key. Built once per gateway
(``router.components.build_components``) and injected through ``router.api.deps.access``;
the checks that apply them are in :mod:`router.api.access`.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from pydantic import SecretStr

from lora_router.ground.errors import LoraRouterError
from lora_router.router.auth.policy import require_app_key
from lora_router.router.auth.ring import KeyRing
from lora_router.router.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
CREATE_HINT = "lora-router keys create --role {role} --name NAME"


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
    """The admin API's rule without keys (defaults: no token, loopback only, loopback names)."""

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

    def keyless(self, request: Request) -> str:
        """``open`` or ``loopback`` when no key and no token exist; 403 otherwise."""
        if self.open_to_all:
            return "open"
        client = request.client.host if request.client is not None else None
        if not _is_loopback(client) or any(h in request.headers for h in _PROXY_HEADERS):
            raise AdminForbidden(
                f"the admin API answers only loopback clients while no API key and no admin "
                f"token exist (client {client}): create a key ("
                f"{CREATE_HINT.format(role='oncall')}) and send 'Authorization: Bearer "
                "<key>', or set LORA_ROUTER_ADMIN_TOKEN on the gateway"
            )
        return "loopback"

    def check_host(self, host_header: str | None) -> None:
        if self.any_host:
            return
        host = _host_name(host_header or "")
        if host not in self.allowed_hosts:
            raise AdminForbidden(
                f"Host {host_header!r} is not allowed for the admin API (allowed: "
                f"{', '.join(sorted(self.allowed_hosts))}); add it to "
                "LORA_ROUTER_ADMIN_ALLOWED_HOSTS"
            )

    def token_matches(self, given: str) -> bool:
        if self.token is None:
            return False
        expected = self.token.get_secret_value().encode()
        return secrets.compare_digest(given.encode(), expected)

    def check_token(self, authorization: str | None) -> None:
        given = bearer(authorization)
        if given is None:
            raise AdminUnauthorized(
                "the admin API requires 'Authorization: Bearer <token>' "
                "(the gateway's LORA_ROUTER_ADMIN_TOKEN, or an oncall/admin API key)"
            )
        if not self.token_matches(given):
            raise AdminUnauthorized("invalid admin token")


@dataclass(frozen=True, slots=True)
class AccessRules:
    """Who may call what on this gateway (see the module docstring)."""

    admin: AdminAccess = AdminAccess()
    key_ring: KeyRing | None = None  # None: an app without a key store (no key is valid)
    require_app_key: bool | None = None  # ``/v1`` needs a key; None: once any key exists

    @classmethod
    def of(cls, settings: Settings, key_ring: KeyRing) -> AccessRules:
        return cls(AdminAccess.of(settings), key_ring, require_app_key(settings))


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


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
