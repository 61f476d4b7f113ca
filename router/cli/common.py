"""Shared CLI plumbing: the ``--home`` option, settings, and errors without tracebacks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from registry.errors import LoraRouterError
from router.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Home directory (base, adapters, cards, routes). Default: $LORA_ROUTER_HOME.",
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Talk to a running gateway at this URL (e.g. http://127.0.0.1:8000)."),
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")]


def load_settings(home: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with CLI flags (when given) taking precedence."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if home is not None:
        values["home"] = home
    try:
        return Settings(**values)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid settings: {msgs}") from exc


class CliError(Exception):
    """A user-facing CLI failure: printed without a traceback, exit status 2."""


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn project errors into one red line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (LoraRouterError, CliError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (ConnectionError, OSError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper
