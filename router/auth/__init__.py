"""API keys with roles: who may call which endpoint, and who the audit says called it.

A key is ``lr_<role>_<id>_<secret>``: the role and the id are readable (``keys list``
shows ids), the secret is 48 hex digits (192 random bits). Only its sha256 is stored
(:mod:`router.auth.keys`), in the key store (:mod:`router.auth.factory`: PostgreSQL via
``DATABASE_URL``, else ``<home>/auth/keys.db``). A key is printed once, by ``lora-router
keys create``; it can be revoked, never shown again.

Roles are ordered, each allowing what the one below it does (:mod:`router.auth.roles`):

======  ==================================================================================
app     ``/v1/*``: completions, chat completions, models, feedback
oncall  also ``/admin/routes*``: read routes and audit, rollback, canary, shadow, promote,
        set-live (guard policy and incidents when they get endpoints)
admin   also ``/admin/keys*`` (list, revoke); registration and retirement when they get
        endpoints
======  ==================================================================================

Open to all: ``/healthz``, ``/readyz``, ``/metrics`` (bounded labels, no secrets), the
OpenAPI document. The gateway keeps the keys in memory (:class:`~router.auth.ring.KeyRing`)
and re-reads the store every ``keys_refresh_s``; the request path does no I/O.
"""
