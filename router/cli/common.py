"""Shared CLI plumbing: the ``--home`` option, settings, and errors without tracebacks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
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


# commands that make a home where there is none; every other command run from the CLI
# reads one, and a mistyped --home must not quietly become a new, empty home
_CREATES_HOME = frozenset({("router.cli.demo", "build"), ("router.cli.base_cmd", "pin")})


@dataclass(frozen=True)
class _Command:
    """The CLI command running now (set by :func:`friendly_errors`)."""

    module: str
    name: str
    remote: bool  # given --url: it talks to a gateway, not to a home


_running: ContextVar[_Command | None] = ContextVar("lora_router_cli_command", default=None)


def load_settings(home: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with CLI flags (when given) taking precedence.

    Called from a command that reads a home, the home must be an existing directory
    (``CliError`` otherwise); see :func:`_reads_home` for the commands that need none.
    """
    values = {k: v for k, v in overrides.items() if v is not None}
    if home is not None:
        values["home"] = home
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid settings: {msgs}") from exc
    if _reads_home(settings) and not settings.home.is_dir():
        raise CliError(no_home_message(settings.home, "not a directory"))
    return settings


def no_home_message(path: Path, why: str) -> str:
    return (f"no lora-router home at {path} ({why}); check --home / $LORA_ROUTER_HOME, "
            "or make one with `lora-router demo build` or `lora-router base pin`")


def require_pinned_home(settings: Settings) -> Path:
    """The home, which must hold a pinned base (``base.lock.json``); else ``CliError``."""
    if not (settings.home / "base.lock.json").is_file():
        raise CliError(no_home_message(settings.home, "no base.lock.json"))
    return settings.home


def _reads_home(settings: Settings) -> bool:
    """Whether the running CLI command reads the home: not outside a command (library
    use), not ``demo build`` / ``base pin`` (they create one), not a command given
    ``--url`` (it talks to a gateway), not a log command on ``DATABASE_URL``."""
    cmd = _running.get()
    if cmd is None or cmd.remote or (cmd.module, cmd.name) in _CREATES_HOME:
        return False
    return not (cmd.module == "router.cli.log" and settings.database_url)


def validation_line(exc: ValidationError) -> str:
    """One line for a pydantic error: the model, the first error's location and message."""
    errors = exc.errors()
    if not errors:
        return f"invalid {exc.title}"
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(input)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid {exc.title}: {loc}: {first['msg']}{more}"


class CliError(Exception):
    """A user-facing CLI failure: printed without a traceback, exit status 2."""


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn project errors (and pydantic validation errors) into one red line on stderr and
    exit code 2 (no traceback); also tells :func:`load_settings` which command runs."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _running.set(_Command(fn.__module__, fn.__name__, bool(kwargs.get("url"))))
        try:
            return fn(*args, **kwargs)
        except (LoraRouterError, CliError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:  # a card, file or input that is not what it claims
            err_console.print(f"[red]error:[/red] {validation_line(exc)}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(2) from None
        except (ConnectionError, OSError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        finally:
            _running.reset(token)

    return wrapper
