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

The rules themselves (:class:`~router.api.access_rules.AccessRules`: the admin rule, the key
ring, whether ``/v1`` needs a key) are the gateway's, injected (``router.api.deps.access``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lora_router.router.api.access_rules import (
    CREATE_HINT,
    LOOPBACK_NAMES,
    AccessRules,
    AdminAccess,
    AdminForbidden,
    AdminUnauthorized,
    bearer,
)
from lora_router.router.api.deps import AccessDep
from lora_router.router.auth.errors import InsufficientRole, InvalidApiKey, MissingApiKey
from lora_router.router.auth.keys import ApiKey, looks_like_key
from lora_router.router.auth.ring import KeyRing
from lora_router.router.auth.roles import Role

__all__ = [
    "ANONYMOUS",
    "LOOPBACK_NAMES",
    "AdminAccess",
    "AdminForbidden",
    "AdminUnauthorized",
    "Principal",
    "actor_label",
    "admin_principal",
    "bearer",
    "require_admin",
    "require_app",
    "require_oncall",
    "require_role",
]


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


def actor_label(principal: str, claimed: str | None) -> str:
    """The audit's ``by``: the principal, with a caller-chosen name marked as a claim."""
    return f"{principal} (claimed: {claimed})" if claimed else principal


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


async def admin_principal(
    request: Request, rules: AccessRules, needed: Role, token: str | None
) -> Principal:
    """The caller of an /admin endpoint that needs ``needed`` under ``rules`` (see the module
    docstring); ``token``: the bearer token it sent, if any."""
    access, ring = rules.admin, rules.key_ring
    access.check_host(request.headers.get("host"))
    authorization = request.headers.get("authorization")
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
            f"'Authorization: Bearer <key>' ({CREATE_HINT.format(role=needed.value)})"
        )
    return Principal(access.keyless(request), Role.ADMIN)


def require_role(
    needed: Role,
) -> Callable[[Request, HTTPAuthorizationCredentials | None, AccessRules], Awaitable[Principal]]:
    """The dependency of an /admin endpoint that needs ``needed``: its caller."""

    async def require(request: Request, credentials: BearerDep, rules: AccessDep) -> Principal:
        return await admin_principal(request, rules, needed, _token(credentials))

    require.__name__ = f"require_{needed.value}"
    return require


require_oncall = require_role(Role.ONCALL)
require_admin = require_role(Role.ADMIN)


async def require_app(credentials: BearerDep, rules: AccessDep) -> Principal:
    """The caller of a /v1 endpoint (see the module docstring)."""
    ring, rule = rules.key_ring, rules.require_app_key
    needed = rule if rule is not None else ring is not None and await ring.has_keys()
    if not needed:
        return ANONYMOUS
    token = _token(credentials)
    if token is None:
        raise MissingApiKey(
            "this gateway requires an API key: send 'Authorization: Bearer <key>' (OpenAI "
            f"clients: api_key=<key>); create one with {CREATE_HINT.format(role='app')}"
        )
    if looks_like_key(token):
        return Principal.of_key(await _key(ring, token))  # every role allows /v1
    if rules.admin.token_matches(token):
        return Principal("token", Role.ADMIN)
    raise InvalidApiKey("invalid API key: expected lr_<role>_<id>_<secret>")
