"""CLI commands: ``base pin`` and ``base verify`` (the pinned base model's hash lock)."""

from __future__ import annotations

from typing import Annotated

import typer

from lora_router.ground.home import Home
from lora_router.registry.base_pin import pin_base, read_lock, verify_base
from lora_router.router.cli.common import CliError, HomeOpt, console, friendly_errors, load_settings

base_app = typer.Typer(help="The pinned base model.", no_args_is_help=True)


@base_app.command("pin")
@friendly_errors
def pin(
    home: HomeOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Base name (default: the current "
                                             "lock's).")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Base version (default: "
                                                "the current lock's, else 1).")] = None,
) -> None:
    """Hash <home>/base and (re)write base.lock.json: do this after replacing a base on purpose."""
    h = Home.at(load_settings(home).home)
    previous = read_lock(h) if h.base_lock.is_file() else None
    name = name or (previous.name if previous else None)
    if not name:
        raise CliError("no base pinned yet: give --name")
    version = version or (previous.version if previous else "1")
    lock = pin_base(h, name=name, version=version)
    if previous is not None and previous.sha256 != lock.sha256:
        console.print(f"base changed: {previous.sha256} -> {lock.sha256}")
    console.print(f"pinned {lock.name}@{lock.version} {lock.sha256} ({len(lock.files)} files)")


@base_app.command("verify")
@friendly_errors
def verify(home: HomeOpt = None) -> None:
    """Re-hash <home>/base and compare with the lock (exit 2 naming changed files)."""
    lock = verify_base(Home.at(load_settings(home).home))
    console.print(f"ok: {lock.name}@{lock.version} {lock.sha256}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(base_app, name="base")
