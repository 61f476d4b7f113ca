"""``/admin/keys``: list and revoke API keys (role ``admin``).

Keys are created with ``lora-router keys create`` on a machine that holds the key store,
so a key's secret never crosses the network. A revocation here applies to this gateway at
once and to the other replicas within ``keys_refresh_s``; the key keeps its row, marked
with who revoked it (the caller's principal) and when.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from lora_router.router.api.access import Principal, require_admin
from lora_router.router.api.deps import KeyRingDep
from lora_router.router.api.openapi import error_responses
from lora_router.router.auth.errors import KeyStoreUnavailable
from lora_router.router.auth.keys import KeyInfo
from lora_router.router.auth.ring import KeyRing

router = APIRouter(
    prefix="/admin/keys",
    tags=["admin"],
    responses=error_responses(401, 403, 431, 503),
)


AdminDep = Annotated[Principal, Depends(require_admin)]


def _require_ring(ring: KeyRing | None) -> KeyRing:
    if ring is None:
        raise KeyStoreUnavailable("this gateway has no key store")
    return ring


class KeysOut(BaseModel):
    keys: list[KeyInfo]


@router.get("")
async def list_keys(caller: AdminDep, ring: KeyRingDep) -> KeysOut:
    """Every key, revoked ones included (never a secret, never a hash)."""
    return KeysOut(keys=[k.info() for k in await _require_ring(ring).store.all()])


@router.post("/{key_id}/revoke", responses=error_responses(404, 422))
async def revoke(
    key_id: Annotated[str, Path(max_length=64)], caller: AdminDep, ring: KeyRingDep
) -> KeyInfo:
    """Revoke a key for good (revoking it again changes nothing)."""
    return (await _require_ring(ring).revoke(key_id, by=caller.name)).info()
