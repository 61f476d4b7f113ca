"""CLI commands: ``demo build`` (the offline demo home), ``demo run`` (the drift scenario)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from lora_router.ground.home import Home
from lora_router.router.cli.common import CliError, HomeOpt, console, friendly_errors, load_settings
from lora_router.router.cli.output import Col, Listing, print_listing

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

    from lora_router.demo.build import build_demo, summary_lines

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # our own progress display replaces the per-file bars
    settings = load_settings(home)
    report = build_demo(Home.at(settings.home), force=force, progress=True)
    if not report.built:
        console.print(f"demo home {report.home} is already built (use --force to rebuild)")
    b = report.base_eval
    rows = [[report.base_name, "-", f"{b['accuracy']:.3f}", f"{b['slice_en']:.3f}",
             f"{b['slice_es']:.3f}"]]
    rows += [[a.adapter_id, a.dataset_id, f"{a.accuracy:.3f}", f"{a.slice_en:.3f}",
              f"{a.slice_es:.3f}"] for a in report.adapters.values()]
    cols = [Col(c) for c in ("model", "trained on", "accuracy", "slice_en", "slice_es")]
    print_listing(Listing(cols, rows, title="held-out accuracy (greedy, first word)"))
    console.print(f"base {report.base_name}@{report.base_version} {report.base_hash}")
    console.print(f"test rows: {report.test_rows}; timings: {report.timings}")
    console.print(f"build time: {report.build_seconds:.1f}s  home: {report.home}")
    console.print("README table (The demo home):", highlight=False)
    for line in summary_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@demo_app.command("run")
@friendly_errors
def run(
    home: HomeOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Ticket order and route keys.")] = 7,
    requests: Annotated[int, typer.Option(
        "--requests", min=50, max=100_000,
        help="Give up if the guard has not acted after this many requests.")] = 3000,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for the run (default: <home>/demo-runs/<UTC time>).",
        show_default=False)] = None,
) -> None:
    """Replay tickets on a copy of the demo home until the guard drops v2's bad canary."""
    from transformers.utils import logging as hf_logging

    from lora_router.demo import scenario as sc
    from lora_router.demo.scenario_timeline import accuracy_table, timeline_lines

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # the timeline says it all
    logging.getLogger("lora_router.router.drift").setLevel(logging.ERROR)
    settings = load_settings(home)
    source = Home.at(settings.home)
    run_dir = out or sc.default_run_dir(source)
    console.print(f"demo run in {run_dir} (a copy of {source.root}; the home is not changed)",
                  highlight=False)
    result = sc.run_scenario(source, run_dir, sc.ScenarioConfig(seed=seed, max_requests=requests),
                             progress=lambda m: console.print(m, highlight=False))
    for line in timeline_lines(result):
        console.print(line, highlight=False, markup=False)
    rows = [[m, lang, str(n), "-" if acc is None else f"{acc:.3f}"]
            for m, lang, n, acc in accuracy_table(result)]
    print_listing(Listing([Col("served by"), Col("language"), Col("requests"), Col("accuracy")],
                          rows, title="as the client measured it"))
    if result.failing_line:
        console.print(result.failing_line, highlight=False, markup=False)
    if not result.detected:
        raise CliError(f"the guard did not act within {requests} requests")
    console.print(f"incident {result.incident.id if result.incident else '-'}; report:",
                  highlight=False)
    typer.echo(str(result.report))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(demo_app, name="demo")
