"""Entry point of the ``lora-router`` command; each area registers its own commands."""

from __future__ import annotations

import typer

from router.cli import base_cmd, demo, flags, log, registry_cmd, serve

app = typer.Typer(
    name="lora-router",
    help="Serve one pinned base model with hot-swappable LoRA adapters; roll back in one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (serve, demo, base_cmd, flags, log, registry_cmd):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
