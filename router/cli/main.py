"""Entry point of the ``lora-router`` command; each area registers its own commands."""

from __future__ import annotations

import typer

from lora_router.router.cli import (
    base_cmd,
    cost,
    demo,
    flags,
    guard,
    incident,
    keys,
    log,
    policy,
    registry_cmd,
    serve,
)
from lora_router.router.cli.helptext import SentenceHelpGroup

app = typer.Typer(
    name="lora-router",
    help="Serve one pinned base model with hot-swappable LoRA adapters; roll back in one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: rich's panels print a `<bool>` type for every flag and keep a docstring's
    # line breaks in the command list
    rich_markup_mode=None,
    cls=SentenceHelpGroup,
)

for module in (serve, demo, base_cmd, flags, log, cost, registry_cmd, incident, keys):
    module.register(app)
guard.register(app)  # after the route commands
policy.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
