"""CLI commands: ``demo build`` (the offline demo home)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from registry.home import Home
from router.cli.common import HomeOpt, console, friendly_errors, load_settings

demo_app = typer.Typer(help="The offline demo: tiny base, triage adapters, cards, routes.",
                       no_args_is_help=True)


@demo_app.command("build")
@friendly_errors
def build(
    home: HomeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if already built.")] = False,
) -> None:
    """Build the demo home offline: tokenizer, tiny base, support-triage@v1/@v2, cards, routes."""
    from transformers.utils import logging as hf_logging

    from router.demo.build import build_demo

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # our own progress display replaces the per-file bars
    settings = load_settings(home)
    report = build_demo(Home.at(settings.home), force=force, progress=True)
    if not report.built:
        console.print(f"demo home {report.home} is already built (use --force to rebuild)")
    table = Table(title="held-out accuracy (greedy, first word)")
    for col in ("model", "trained on", "accuracy", "slice_en", "slice_es"):
        table.add_column(col)
    b = report.base_eval
    table.add_row(report.base_name, "-", f"{b['accuracy']:.3f}", f"{b['slice_en']:.3f}",
                  f"{b['slice_es']:.3f}")
    for a in report.adapters.values():
        table.add_row(a.adapter_id, a.dataset_id, f"{a.accuracy:.3f}", f"{a.slice_en:.3f}",
                      f"{a.slice_es:.3f}")
    console.print(table)
    console.print(f"base {report.base_name}@{report.base_version} {report.base_hash}")
    console.print(f"test rows: {report.test_rows}; timings: {report.timings}")
    console.print(f"build time: {report.build_seconds:.1f}s  home: {report.home}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(demo_app, name="demo")
