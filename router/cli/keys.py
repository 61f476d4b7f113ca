"""CLI: ``lora-router keys create|list|revoke``: API keys with roles, in the key store.

Direct mode: the store the settings select (``DATABASE_URL``, else ``<home>/auth/keys.db``),
as a running gateway reads it; a gateway sees a new or revoked key within
``keys_refresh_s``. ``create`` prints the key once; nothing can show it again.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from lora_router.router.auth.errors import KeyStoreUnavailable
from lora_router.router.auth.factory import build_key_store, count_keys
from lora_router.router.auth.keys import KeyInfo
from lora_router.router.auth.policy import require_app_key
from lora_router.router.auth.roles import Role
from lora_router.router.auth.store import KeyStore, create_key, revoke_key
from lora_router.router.cli.common import (
    HomeOpt,
    console,
    err_console,
    friendly_errors,
    load_settings,
)
from lora_router.router.cli.output import Col, Listing, echo_json, print_listing
from lora_router.router.settings import Settings

T = TypeVar("T")

keys_app = typer.Typer(help="API keys with roles (app, oncall, admin).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _run(home: HomeOpt, fn: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = load_settings(home)

    async def main() -> T:
        store = build_key_store(settings)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


@keys_app.command("create")
@friendly_errors
def create(
    role: Annotated[Role, typer.Option("--role", help="app, oncall or admin.",
                                       case_sensitive=False)],
    name: Annotated[str, typer.Option("--name", help="Whose key: the audit shows key:NAME.")],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    key, token = _run(home, lambda s: create_key(s, role=role, name=name, by=_by()))
    if json_:
        echo_json({**key.info().model_dump(mode="json"), "key": token})
        return
    typer.echo(token)  # alone on stdout: `KEY=$(lora-router keys create ...)` works
    err_console.print(
        f"created key {key.id} for {key.principal} with role {key.role.value}: store it now, "
        "it is not shown again (send it as 'Authorization: Bearer <key>')",
        highlight=False, soft_wrap=True,
    )


def _listing(keys: list[KeyInfo]) -> Listing:
    cols = [Col("id"), Col("name"), Col("role"), Col("status"), Col("created", wrap=True),
            Col("revoked", wrap=True)]
    rows = [
        [k.id, k.name, k.role.value, "active" if k.active else "revoked",
         f"{k.created_at:%Y-%m-%d %H:%M:%S} by {k.created_by}",
         f"{k.revoked_at:%Y-%m-%d %H:%M:%S} by {k.revoked_by}" if k.revoked_at else "-"]
        for k in keys
    ]
    return Listing(cols, rows, title="API keys")


@keys_app.command("list")
@friendly_errors
def list_keys(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """List the keys (id, owner, role, status); never a secret."""
    keys = [k.info() for k in _run(home, lambda s: s.all())]
    if json_:
        echo_json(keys)
        return
    if not keys:
        console.print("no API keys (lora-router keys create --role R --name N)", highlight=False)
        return
    print_listing(_listing(keys))


@keys_app.command("revoke")
@friendly_errors
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (keys list).")],
    home: HomeOpt = None,
) -> None:
    """Revoke a key for good; gateways refuse it within keys_refresh_s."""
    key = _run(home, lambda s: revoke_key(s, key_id, by=_by()))
    console.print(f"revoked key {key.id} ({key.principal}, role {key.role.value}) at "
                  f"{key.revoked_at:%Y-%m-%d %H:%M:%S} UTC by {key.revoked_by}",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(keys_app, name="keys")


def keys_guard(settings: Settings) -> bool:
    """For ``serve``, before it starts: whether API keys guard this gateway (and say how);
    False when no key exists (or the store cannot be read, said as a warning): the caller
    then applies the no-key rule (loopback-only admin, a non-loopback host refused)."""
    rule = require_app_key(settings)
    try:
        total, active = count_keys(settings)
    except KeyStoreUnavailable as exc:
        err_console.print(f"[yellow]warning: cannot read the API keys: {exc}[/yellow]",
                          highlight=False, soft_wrap=True)
        return False
    if not total:
        if rule:
            err_console.print(
                "[yellow]warning: /v1 requires an app key (require_app_key) and no key "
                "exists: every /v1 call is refused until one is created (lora-router keys "
                "create --role app --name NAME)[/yellow]", highlight=False, soft_wrap=True)
        return False
    v1 = "needs no key (require_app_key false)" if rule is False else "needs an app key"
    console.print(
        f"access: {active} API key(s) in {build_key_store(settings).location}: /admin/* "
        f"needs an oncall or admin key from any address; /v1 {v1}",
        highlight=False, soft_wrap=True,
    )
    if not active:
        err_console.print("[yellow]warning: every API key is revoked: only the admin token "
                          "can call the admin API (lora-router keys create)[/yellow]",
                          highlight=False, soft_wrap=True)
    if settings.insecure_open_admin:
        console.print("--insecure-open-admin has no effect while API keys exist",
                      highlight=False)
    return True
