"""Who may call what, and who the audit says called it.

Roles and keys: :mod:`router.auth` (``app`` < ``oncall`` < ``admin``). Every endpoint but
``/healthz``, ``/readyz``, ``/metrics`` and the OpenAPI document declares the role it needs
with one of the dependencies below (:func:`require_app`, :data:`require_oncall`,
:data:`require_admin`); a caller sends ``Authorization: Bearer <key>``.

``/v1`` (:func:`require_app`): needs a key when ``require_app_key`` says so (setting, else the
home's ``access.yaml``, else once any key exists; :mod:`router.auth.policy`): 401 without
one, or with a wrong or revoked one. With no key needed, ``Authorization`` is ignored
(OpenAI clients send their ``api_key`` whatever it is).

``/admin`` (:func:`require_role`), in this order:

- The ``Host`` header must be localhost, 127.0.0.1, [::1], the bound host, ``public_url``'s
  host or one of ``LORA_ROUTER_ADMIN_ALLOWED_HOSTS`` ("*": any), else 403: a page on
  another site that rebinds its DNS name to this address cannot reach the API.
- A bearer API key (``lr_...``) must be valid (401) and have the role (403); the principal
  is ``key:<owner>``, and a name the caller sends is ignored.
- With an admin token (``LORA_ROUTER_ADMIN_TOKEN``) any other call needs
  ``Authorization: Bearer <token>`` (401 otherwise); the principal is ``token`` (role admin).
- Once any key exists (revoked ones count: revoking every key does not reopen the admin
  API), a call without a key is 401, from any address.
- With no key and no token, only loopback clients are answered (403 for others, and for a
  proxied request: a local proxy makes every client look local); the principal is
  ``loopback``. ``serve --insecure-open-admin`` (``LORA_ROUTER_INSECURE_OPEN_ADMIN``)
  opens it to every client, principal ``open``.

Without a key, a name the caller sends (body ``actor`` or the ``x-lora-router-actor``
header) is not authenticated: the audit records it as a claim, ``"loopback (claimed: alice)"``.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from registry.errors import LoraRouterError
from router.auth.errors import InsufficientRole, InvalidApiKey, MissingApiKey
from router.auth.keys import ApiKey, looks_like_key
from router.auth.ring import KeyRing
from router.auth.roles import Role
from router.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
_CREATE_HINT = "lora-router keys create --role {role} --name NAME"


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
class Principal:
    """Who is calling, as the audit names them, and the role they act with."""

    name: str  # key:<owner>, token, loopback, open, anonymous
    role: Role
    verified: bool = False  # a key's owner: a name the caller claims is ignored

    @classmethod
    def of_key(cls, key: ApiKey) -> Principal:
        return cls(key.principal, key.role, verified=True)


ANONYMOUS = Principal("anonymous", Role.APP)


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
                f"{_CREATE_HINT.format(role='oncall')}) and send 'Authorization: Bearer "
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


_DEFAULT_ACCESS = AdminAccess()
# declares the bearer scheme in the OpenAPI document; the rules below decide what it needs
_BEARER = HTTPBearer(
    auto_error=False, scheme_name="api_key",
    description="An API key (lr_<role>_<id>_<secret>, lora-router keys create), or the "
    "admin token (LORA_ROUTER_ADMIN_TOKEN).",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    token = credentials.credentials.strip() if credentials is not None else ""
    return token or None


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def actor_label(principal: str, claimed: str | None) -> str:
    """The audit's ``by``: the principal, with a caller-chosen name marked as a claim."""
    return f"{principal} (claimed: {claimed})" if claimed else principal


def _admin_access(request: Request) -> AdminAccess:
    access: AdminAccess | None = getattr(request.app.state, "admin_access", None)
    return access or _DEFAULT_ACCESS


def _ring(request: Request) -> KeyRing | None:
    ring: KeyRing | None = getattr(request.app.state, "key_ring", None)
    return ring


async def _key(ring: KeyRing | None, token: str) -> ApiKey:
    if ring is None:
        raise InvalidApiKey("invalid API key: this gateway has no key store")
    return await ring.authenticate(token)


def _with_role(key: ApiKey, needed: Role) -> Principal:
    if not key.role.allows(needed):
        raise InsufficientRole(
            f"API key {key.id} ({key.name}) has role {key.role.value}; this needs "
            f"{needed.value} or above"
        )
    return Principal.of_key(key)


async def admin_principal(request: Request, needed: Role, token: str | None) -> Principal:
    """The caller of an /admin endpoint that needs ``needed`` (see the module docstring);
    ``token``: the bearer token it sent, if any."""
    access = _admin_access(request)
    access.check_host(request.headers.get("host"))
    authorization = request.headers.get("authorization")
    ring = _ring(request)
    if token is not None and looks_like_key(token):
        return _with_role(await _key(ring, token), needed)
    if access.token is not None:
        access.check_token(authorization)
        return Principal("token", Role.ADMIN)
    if ring is not None and await ring.has_keys():
        if token is not None:
            raise InvalidApiKey("invalid API key: expected lr_<role>_<id>_<secret>")
        raise MissingApiKey(
            f"this needs an API key with role {needed.value} or above: send "
            f"'Authorization: Bearer <key>' ({_CREATE_HINT.format(role=needed.value)})"
        )
    return Principal(access.keyless(request), Role.ADMIN)


def require_role(
    needed: Role,
) -> Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[Principal]]:
    """The dependency of an /admin endpoint that needs ``needed``: its caller."""

    async def require(request: Request, credentials: BearerDep) -> Principal:
        return await admin_principal(request, needed, _token(credentials))

    require.__name__ = f"require_{needed.value}"
    return require


require_oncall = require_role(Role.ONCALL)
require_admin = require_role(Role.ADMIN)


async def require_app(request: Request, credentials: BearerDep) -> Principal:
    """The caller of a /v1 endpoint (see the module docstring)."""
    ring = _ring(request)
    rule: bool | None = getattr(request.app.state, "require_app_key", None)
    needed = rule if rule is not None else ring is not None and await ring.has_keys()
    if not needed:
        return ANONYMOUS
    token = _token(credentials)
    if token is None:
        raise MissingApiKey(
            "this gateway requires an API key: send 'Authorization: Bearer <key>' (OpenAI "
            f"clients: api_key=<key>); create one with {_CREATE_HINT.format(role='app')}"
        )
    if looks_like_key(token):
        return Principal.of_key(await _key(ring, token))  # every role allows /v1
    if _admin_access(request).token_matches(token):
        return Principal("token", Role.ADMIN)
    raise InvalidApiKey("invalid API key: expected lr_<role>_<id>_<secret>")


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
