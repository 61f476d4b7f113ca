"""CLI: ``lora-router serve``: run the gateway with uvicorn.

With API keys (``lora-router keys create``) the admin API needs an oncall or admin key
from any address (said at start). With no key and no ``LORA_ROUTER_ADMIN_TOKEN`` the admin
API answers loopback clients only (said at start), and a non-loopback ``--host`` is refused
(exit 2) unless ``--insecure-open-admin`` is given, which opens the admin API to every
client that reaches the port (loud warning).

``--engine-api`` serves the engine alone, with vLLM's OpenAI protocol
(:mod:`adapters.engine_server`): a backend for a gateway with ``engine=remote``. It has no
routes and no admin API, but it loads whatever adapter path it is sent, so on a non-loopback
``--host`` it needs ``LORA_ROUTER_ENGINE_API_KEY`` (or ``--insecure-open-admin``).

A gateway with ``engine=remote`` checks only the base files it reads (tokenizer, config)
against the pin: the weights live with its backends, whose bases it checks when it starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lora_router.adapters.local_base import verify_local_base
from lora_router.ground.home import Home
from lora_router.registry.base_pin import verify_base
from lora_router.registry.integrity import verify_adapter
from lora_router.router.cli.common import (
    CliError,
    HomeOpt,
    check_port_free,
    console,
    err_console,
    friendly_errors,
    load_settings,
    stop_signals_exit_cleanly,
)
from lora_router.router.cli.keys import keys_guard
from lora_router.router.engine_spec import engine_spec
from lora_router.router.flags.factory import check_routes_file
from lora_router.router.flags.state import load_routes_file
from lora_router.router.settings import Settings


@friendly_errors
def serve(
    home: HomeOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port.")] = None,
    routes: Annotated[
        Path | None,
        typer.Option("--routes", help="Initial route table. Default: <home>/routes.yaml."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    replica_id: Annotated[
        str | None,
        typer.Option("--replica-id", help="This replica's id in Redis. Default: hostname-pid."),
    ] = None,
    insecure_open_admin: Annotated[
        bool,
        typer.Option(
            "--insecure-open-admin",
            help="Without LORA_ROUTER_ADMIN_TOKEN, answer /admin/* from any client (anyone "
            "who reaches the port can change routes). Default: loopback clients only.",
        ),
    ] = False,
    engine_api: Annotated[
        bool,
        typer.Option(
            "--engine-api",
            help="Serve the engine alone with vLLM's OpenAI protocol (/v1/models, "
            "/v1/completions, /v1/load_lora_adapter, /v1/unload_lora_adapter, /health): a "
            "backend for a gateway with LORA_ROUTER_ENGINE=remote.",
        ),
    ] = False,
) -> None:
    """Serve the OpenAI-compatible gateway for a home (base, adapters, routes)."""
    settings = load_settings(
        home, host=host, port=port, routes_file=routes, replica_id=replica_id,
        insecure_open_admin=True if insecure_open_admin else None,
    )
    check_port_free(settings.host, settings.port)  # a busy port: one line, before any loading
    if engine_api:
        _serve_engine_api(settings, log_level)
        return
    _admin_exposure(settings)
    _check_engine(settings)
    import uvicorn  # slow imports (torch) after the checks that fail fast

    from lora_router.router.app import create_app

    # Checked here so that a missing/changed base, a bad routes file or a tampered adapter
    # is one clean line, not a lifespan traceback from uvicorn (the lifespan checks again).
    # The routes the file would create must name known adapters, in Redis mode too: there
    # they would reach every replica (only the routes Redis lacks are seeded).
    home_ = Home.at(settings.home)
    lock = verify_local_base(home_) if settings.engine == "remote" else verify_base(home_)
    states = load_routes_file(settings.routes_path)
    check_routes_file(settings, home_)
    if settings.redis_url is None:  # embedded, the routes file is what will be served
        for adapter_id in sorted({a for s in states.values() for a in s.referenced_adapters()}):
            verify_adapter(home_, adapter_id)
    # The flag listener thread must get the GIL promptly while the loop and the engine's
    # worker thread are busy (default switch interval: 5 ms per wait).
    sys.setswitchinterval(settings.switch_interval_s)
    console.print(
        f"serving base [bold]{lock.name}[/bold] ({lock.sha256[:12]}) from {settings.home} "
        f"on http://{settings.host}:{settings.port}",
        highlight=False, soft_wrap=True,
    )
    with stop_signals_exit_cleanly():  # Ctrl-C / SIGTERM: graceful shutdown, then exit 0
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=30,
        )


def _serve_engine_api(settings: Settings, log_level: str) -> None:
    """``--engine-api``: the engine behind vLLM's protocol, for a remote gateway."""
    key = settings.engine_api_key
    if key is None and not settings.loopback_host:
        if not settings.insecure_open_admin:
            raise CliError(
                f"refusing to serve the engine API on {settings.host} without an API key: "
                "it loads any adapter path it is sent; set LORA_ROUTER_ENGINE_API_KEY, bind "
                "a loopback --host, or pass --insecure-open-admin"
            )
        err_console.print(
            "[bold red]WARNING: the engine API has no API key and answers every client "
            f"that reaches {settings.host}:{settings.port}.[/]", highlight=False, soft_wrap=True,
        )
    import uvicorn

    from lora_router.adapters.engine_server import create_engine_app
    from lora_router.adapters.factory import build_engine

    home_ = Home.at(settings.home)
    lock = verify_base(home_)  # one clean line for a changed base (the engine checks again)
    spec = engine_spec(settings)
    app = create_engine_app(
        lambda: build_engine(spec, home_),
        api_key=key.get_secret_value() if key is not None else None,
        base_root=str(home_.base_dir),
    )
    sys.setswitchinterval(settings.switch_interval_s)
    console.print(
        f"serving the engine API for base [bold]{lock.name}[/bold] ({lock.sha256[:12]}) from "
        f"{settings.home} on http://{settings.host}:{settings.port}",
        highlight=False, soft_wrap=True,
    )
    with stop_signals_exit_cleanly():
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level,
                    lifespan="on", access_log=False, timeout_graceful_shutdown=30)


def _admin_exposure(settings: Settings) -> None:
    """Refuse an open admin API on a network interface; say how the admin API is guarded."""
    if keys_guard(settings):  # API keys exist: they guard it, from any address
        return
    if settings.admin_token is not None:
        return
    if settings.insecure_open_admin:
        err_console.print(
            "[bold red]WARNING: --insecure-open-admin: the admin API (/admin/*) has no token "
            f"and answers every client that reaches {settings.host}:{settings.port}; anyone "
            "there can change or roll back routes. Create API keys (lora-router keys create) "
            "or set LORA_ROUTER_ADMIN_TOKEN instead.[/]",
            highlight=False, soft_wrap=True,
        )
        return
    if not settings.loopback_host:
        raise CliError(
            f"refusing to serve on {settings.host} with no API key and no admin token: "
            "create a key (lora-router keys create --role admin --name NAME), set "
            "LORA_ROUTER_ADMIN_TOKEN, bind a loopback --host, or pass --insecure-open-admin"
        )
    console.print(
        "admin API: no API key and no LORA_ROUTER_ADMIN_TOKEN, so /admin/* answers loopback "
        "clients only",
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("serve")(serve)


def _check_engine(settings: Settings) -> None:
    """The engine's settings, and for ``engine=vllm`` the extra itself: one ``ConfigError``
    line here rather than a lifespan traceback from uvicorn."""
    from lora_router.router.engine_spec import engine_spec

    engine_spec(settings)
    if settings.engine == "vllm":
        from lora_router.adapters.vllm_engine import load_vllm

        load_vllm()
