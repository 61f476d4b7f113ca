"""Shared CLI plumbing: the ``--home`` option, settings, and errors without tracebacks."""

from __future__ import annotations

import contextlib
import errno
import functools
import signal
import socket
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from lora_router.ground.errors import LoraRouterError
from lora_router.router.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

class _CliConsole(Console):
    """A console that wraps long lines only on a terminal: piped or logged output keeps
    each printed line whole (rich would otherwise wrap it at 80 columns)."""

    @property
    def soft_wrap(self) -> bool:
        return not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, _value: bool) -> None:
        pass


console: Console = _CliConsole()
err_console: Console = _CliConsole(stderr=True)

# The home when neither --home nor $LORA_ROUTER_HOME names one: ./.home where that exists
# in the current directory (what `make run` builds and serves), else Settings' default,
# ~/.lora-router. One rule for the Makefile, the CLI and the README.
LOCAL_HOME = Path(".home")
HOME_RULE = "--home, else $LORA_ROUTER_HOME, else ./.home if it exists, else ~/.lora-router"

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Home directory (base, adapters, cards, routes). Default: $LORA_ROUTER_HOME, "
        "else ./.home if it exists, else ~/.lora-router.",
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="LORA_ROUTER_URL",
        show_envvar=False,
        help="Talk to a running gateway at this URL (e.g. http://127.0.0.1:8000); default: "
        "$LORA_ROUTER_URL, else REDIS_URL directly.",
    ),
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")]


# commands that make a home where there is none; every other command run from the CLI
# reads one, and a mistyped --home must not quietly become a new, empty home
_CREATES_HOME = frozenset({
    ("lora_router.router.cli.demo", "build"),
    ("lora_router.router.cli.base_cmd", "pin"),
})
# commands that read only the inference log: no home needed on DATABASE_URL
_LOG_COMMANDS = frozenset({"lora_router.router.cli.log", "lora_router.router.cli.cost"})


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
    if "home" not in settings.model_fields_set and LOCAL_HOME.is_dir():
        settings = settings.model_copy(update={"home": LOCAL_HOME.resolve()})
    if _reads_home(settings) and not settings.home.is_dir():
        raise CliError(no_home_message(settings.home, "not a directory"))
    return settings


def no_home_message(path: Path, why: str) -> str:
    return (f"no lora-router home at {path} ({why}); the home is {HOME_RULE}; "
            "make one with `make run`, `lora-router demo build` or `lora-router base pin`")


def require_pinned_home(settings: Settings) -> Path:
    """The home, which must hold a pinned base (``base.lock.json``); else ``CliError``."""
    if not (settings.home / "base.lock.json").is_file():
        raise CliError(no_home_message(settings.home, "no base.lock.json"))
    return settings.home


def _reads_home(settings: Settings) -> bool:
    """Whether the running CLI command reads the home: not outside a command (library
    use), not ``demo build`` / ``base pin`` (they create one), not a command given
    ``--url`` (it talks to a gateway), not a log or cost command on ``DATABASE_URL``."""
    cmd = _running.get()
    if cmd is None or cmd.remote or (cmd.module, cmd.name) in _CREATES_HOME:
        return False
    return not (cmd.module in _LOG_COMMANDS and settings.database_url)


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


def check_port_free(host: str, port: int) -> None:
    """Fail fast (``CliError``) when ``host:port`` cannot be bound, before anything slow
    (hashing the base, loading the model) starts. Binds the way uvicorn will
    (``SO_REUSEADDR``), so a port in TIME_WAIT is not reported as busy."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CliError(f"cannot bind {host}:{port}: {exc.strerror}; check --host") from None
    family, kind, proto, _name, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} is in use on {host}: set PORT=... (make run) or "
                               "--port (lora-router serve)") from None
            raise CliError(f"cannot bind {host}:{port}: {exc.strerror}; check --host and "
                           "--port") from None


@contextlib.contextmanager
def stop_signals_exit_cleanly() -> Iterator[None]:
    """Within this block SIGINT and SIGTERM end the process with status 0.

    For a server: uvicorn catches both, shuts down gracefully, restores the handlers it
    found and re-raises the signal; with the default handlers that re-raise kills the
    process (status 130/143, which ``make run`` reports as an error). The handler installed
    here turns it (or a signal that arrives before uvicorn took over) into ``exit 0``.
    """
    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
