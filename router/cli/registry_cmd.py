"""CLI: ``lora-router registry ...``, thin over :mod:`registry` (lifecycle, lineage, ...)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
import yaml
from pydantic import ValidationError

from lora_router.ground.errors import AdapterReferenced, LoraRouterError
from lora_router.ground.home import Home
from lora_router.registry import hf_export, integrity, lifecycle, lineage, questions
from lora_router.registry.cards import DataSource, LifecycleStatus, RunManifest, Splits
from lora_router.registry.ingest import subjects_by_split
from lora_router.registry.store import RegistryStore
from lora_router.registry.trained_on import trained_on
from lora_router.router.cli.common import (
    CliError,
    HomeOpt,
    console,
    friendly_errors,
    load_settings,
    require_pinned_home,
    validation_line,
)
from lora_router.router.cli.registry_views import (
    print_base_impact,
    print_lineage,
    print_problems,
    print_reproduce,
    print_trained_on,
)
from lora_router.router.flags.state import RouteState
from lora_router.router.settings import Settings

app = typer.Typer(
    name="registry",
    help="Lineage registry: register, validate, trace, answer deletion requests, retire.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table/tree.")]
ByOpt = Annotated[str, typer.Option("--by", help="Who (recorded in the card's history).")]


def register(root: typer.Typer) -> None:
    """Add the ``registry`` group to the root app."""
    root.add_typer(app, name="registry")


def _home(home: Path | None) -> Home:
    """The home a registry command works on: it must hold a pinned base (a typo'd
    ``--home`` would otherwise answer "no" to ``trained-on``)."""
    return Home.at(require_pinned_home(load_settings(home)))


def _routes(home: Path | None) -> questions.Routes:
    return _routes_in_force(home)[0]


def _routes_in_force(home: Path | None) -> tuple[questions.Routes, str]:
    """The routes in force, and where they were read: the routes file, overlaid with the
    state in Redis when ``REDIS_URL`` is set (a route in Redis wins; one only in the file is
    what a gateway seeds into Redis at start). Redis unreachable: ``FlagStoreUnavailable``."""
    settings = load_settings(home)
    routes = dict(questions.load_routes(Home.at(require_pinned_home(settings)),
                                      path=settings.routes_path))
    source = str(settings.routes_path)
    if settings.redis_url:
        routes.update(asyncio.run(_redis_routes(settings)))
        source = f"Redis at {_redacted(settings.redis_url)} and {source}"
    return routes, source


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


async def _redis_routes(settings: Settings) -> dict[str, RouteState]:
    from lora_router.router.flags.factory import open_route_store

    async with open_route_store(settings, seed=False) as store:
        return store.all()


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _read_yaml(path: Path, key: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{path}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get(key), dict):
        data = data[key]  # the seed chapter's style: `run_manifest: {...}`
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a YAML mapping")
    return data


def _parse_eval(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise CliError(f"--eval {item!r}: expected NAME=NUMBER (e.g. slice_es=0.87)")
    return out


def _load_manifest(path: Path) -> RunManifest:
    data = _read_yaml(path, "run_manifest")
    data.setdefault("checkpoint", {"location": "", "hash": ""})  # computed at register
    try:
        return RunManifest.model_validate(data)
    except ValidationError as exc:
        raise CliError(f"{path}: not a valid run manifest: {validation_line(exc)}") from exc


def _manifest_base_hash(manifest: RunManifest) -> str | None:
    cfg = manifest.config
    for key in ("base_hash", "base_sha256"):
        if isinstance(cfg.get(key), str):
            return str(cfg[key])
    for key in ("base", "base_model"):
        if isinstance(cfg.get(key), dict) and isinstance(cfg[key].get("hash"), str):
            return str(cfg[key]["hash"])
    return None


@app.command("register")
@friendly_errors
def register_cmd(
    adapter_dir: Annotated[Path, typer.Argument(help="PEFT adapter directory.")],
    adapter_id: Annotated[str, typer.Option("--id", help="Adapter id, name@version.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset card id it trained on.")],
    run_manifest: Annotated[Path, typer.Option("--run-manifest", help="Run manifest YAML.")],
    intended_use: Annotated[str, typer.Option("--intended-use")],
    base_hash: Annotated[str | None, typer.Option(
        "--base-hash", help="Base it trained on (default: the manifest's config.base_hash).")
    ] = None,
    eval_: Annotated[list[str] | None, typer.Option("--eval", help="NAME=VALUE, repeat.")] = None,
    out_of_scope: Annotated[list[str] | None, typer.Option("--out-of-scope")] = None,
    limitation: Annotated[list[str] | None, typer.Option("--limitation")] = None,
    rollback_target: Annotated[str | None, typer.Option("--rollback-target")] = None,
    objective: Annotated[str, typer.Option("--objective")] = "sft",
    by: ByOpt = "cli",
    home: HomeOpt = None,
) -> None:
    """Register an adapter directory (copied into the home) with its dataset card and run."""
    h = _home(home)
    manifest = _load_manifest(run_manifest)
    base = base_hash or _manifest_base_hash(manifest)
    if base is None:
        raise CliError("the run manifest records no base hash (config.base_hash); "
                       "pass --base-hash")
    card = lifecycle.register_adapter_from(
        h, adapter_dir, adapter_id, dataset_id=dataset, run_manifest=manifest,
        method=lifecycle.method_from_adapter_config(adapter_dir, objective), base_hash=base,
        intended_use=intended_use, eval=_parse_eval(eval_ or []),
        out_of_scope=out_of_scope, known_limitations=limitation,
        rollback_target=rollback_target, by=by,
    )
    console.print(f"registered {card.id} ({card.adapter_hash}) on base {card.base_model.hash}")
    _attach_baseline_after_register(h, card.id)


def _attach_baseline_after_register(h: Home, adapter_id: str) -> None:
    """The drift baseline of a freshly registered adapter; a dataset whose training file
    cannot be read leaves the card without one (said, not fatal)."""
    from lora_router.router.drift.baselines import attach_baseline, base_token_counter

    try:
        _, card = attach_baseline(h, adapter_id, token_counter=base_token_counter(h))
    except LoraRouterError as exc:
        console.print(f"no drift baseline: {exc} (compute it later with "
                      f"`lora-router registry baseline {adapter_id}`)", highlight=False)
        return
    assert card.baseline is not None
    console.print(f"baseline {card.baseline.path} ({card.baseline.sha256})", highlight=False)


@app.command("register-dataset")
@friendly_errors
def register_dataset_cmd(
    dataset_id: Annotated[str, typer.Argument(help="Dataset card id.")],
    card: Annotated[Path, typer.Option("--card", help="Dataset card YAML (sources, ...).")],
    files: Annotated[Path | None, typer.Option(
        "--files", help="Directory of data files (copied to data/<id>/).")] = None,
    subject_field: Annotated[str | None, typer.Option(
        "--subject-field", help="Record field naming the data subject (e.g. customer_id).")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Hash a dataset's files and write its card (with a subject manifest if asked)."""
    h = _home(home)
    data = _read_yaml(card, "dataset_card")
    if files is not None:
        lifecycle.import_dataset_dir(h, files, dataset_id)
    subjects = None
    if subject_field:
        splits = subjects_by_split(h.dataset_dir(dataset_id), subject_field)
        subjects = lifecycle.subject_manifest(h, splits=splits, kind=subject_field)
    try:
        result = lifecycle.register_dataset(
            h, dataset_id,
            sources=[DataSource.model_validate(s) for s in data.get("sources", [])],
            consent_basis=str(data.get("consent_basis", "")),
            labeler_instructions_version=str(data.get("labeler_instructions_version", "")),
            splits=Splits.model_validate(data.get("splits")),
            measured=data.get("measured"), excluded=data.get("excluded"), subjects=subjects,
            expected_hash=data.get("hash"),
        )
    except ValidationError as exc:
        raise CliError(f"{card}: not a valid dataset card: {validation_line(exc)}") from exc
    console.print(f"registered dataset {result.id} ({result.hash}, {len(result.files)} files)")


@app.command("validate")
@friendly_errors
def validate_cmd(
    skip_base: Annotated[bool, typer.Option("--skip-base", help="Don't re-hash the base.")]
    = False,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Check every link and every hash; exit 1 with the list of problems."""
    problems = lineage.validate(_home(home), check_base=not skip_base, routes=_routes(home))
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        _echo_json({"ok": not errors, "problems": [p.to_dict() for p in problems]})
    else:
        print_problems(problems)
    if errors:
        raise typer.Exit(1)


@app.command("verify")
@friendly_errors
def verify_cmd(adapter_id: str, home: HomeOpt = None) -> None:
    """The load-time gate for one adapter: files match its card, base matches the pin."""
    card = integrity.verify_adapter(_home(home), adapter_id)
    console.print(f"{card.id}: ok ({card.adapter_hash})")


@app.command("lineage")
@friendly_errors
def lineage_cmd(adapter_id: str, as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """Model card -> run manifest -> dataset card -> sources."""
    tree = lineage.lineage(_home(home), adapter_id)
    if as_json:
        _echo_json(tree)
    else:
        print_lineage(tree)


@app.command("trained-on")
@friendly_errors
def trained_on_cmd(
    source: Annotated[str | None, typer.Option("--source")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset")] = None,
    subject: Annotated[str | None, typer.Option(
        "--subject", help="A data subject (e.g. a customer id); matched by keyed hash "
        "(the home's subject key or $LORA_ROUTER_SUBJECT_KEY).")
    ] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Is it in the training data? Which adapters, where they serve, what to exclude."""
    answer = trained_on(_home(home), source=source, dataset=dataset, subject=subject,
                        routes=_routes(home))
    if as_json:
        _echo_json(answer.to_dict())
    else:
        print_trained_on(answer)


@app.command("base-impact")
@friendly_errors
def base_impact_cmd(
    base: Annotated[str, typer.Argument(help="Base name, name@version, hash or hash prefix.")],
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Every adapter tied to a base, with its dataset card: the migration plan."""
    impact = questions.base_impact(_home(home), base, routes=_routes(home))
    if as_json:
        _echo_json(impact)
    else:
        print_base_impact(impact)


@app.command("retire")
@friendly_errors
def retire_cmd(
    adapter_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the card).")],
    by: ByOpt = "cli",
    home: HomeOpt = None,
) -> None:
    """Retire an adapter for good; refused while a route (live, canary, shadow, rollback
    target: in Redis when REDIS_URL is set) or a model card references it, or while its
    card status is shadow/canary/live (a gateway's routes serve it). Re-retiring changes
    nothing and says when it was retired and by whom."""
    h = _home(home)
    current = RegistryStore(h).get_model_card(adapter_id)
    if current.status == "retired":  # nothing to record: say when and by whom it was
        when = next((c for c in reversed(current.history) if c.status == "retired"), None)
        console.print(f"{adapter_id}: already retired" + (
            f" on {when.at:%Y-%m-%d %H:%M} UTC by {when.by} ({when.reason})" if when else "")
            + "; nothing changed", highlight=False)
        return
    routes, source = _routes_in_force(home)
    try:
        card = lifecycle.retire(h, adapter_id, reason, by, routes=routes)
    except AdapterReferenced as exc:
        raise CliError(f"{exc} (routes read from {source})") from exc
    console.print(f"{card.id}: retired ({reason})")


@app.command("set-status")
@friendly_errors
def set_status_cmd(
    adapter_id: str,
    status: Annotated[str, typer.Argument(help="registered|shadow|canary|live|retired")],
    reason: Annotated[str, typer.Option("--reason")],
    by: ByOpt = "cli",
    home: HomeOpt = None,
) -> None:
    """Move an adapter's lifecycle status (recorded in its history)."""
    if status not in ("registered", "shadow", "canary", "live", "retired"):
        raise CliError(f"unknown status {status!r}")
    st: LifecycleStatus = status  # type: ignore[assignment]
    card = lifecycle.set_status(_home(home), adapter_id, st, by, reason, routes=_routes(home))
    console.print(f"{card.id}: {card.status}")


@app.command("set-rollback")
@friendly_errors
def set_rollback_cmd(
    adapter_id: str,
    to: Annotated[str | None, typer.Option("--to", help="New rollback target.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Clear the rollback target.")] = False,
    home: HomeOpt = None,
) -> None:
    """Change a model card's rollback target (checked: registered, same base, no cycle)."""
    if (to is None) == (not none):
        raise CliError("give exactly one of --to ID or --none")
    card = lifecycle.set_rollback_target(_home(home), adapter_id, to)
    console.print(f"{card.id}: rollback_target {card.rollback_target or 'none'}")


@app.command("reproduce")
@friendly_errors
def reproduce_cmd(
    adapter_id: str,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the seed.")] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Re-run the recorded training; exit 0 if the weights are identical bit for bit."""
    from lora_router.training.reproduce import reproduce

    result = reproduce(_home(home), adapter_id, seed=seed)
    if as_json:
        _echo_json(result.to_dict())
    else:
        print_reproduce(result)
    if not result.identical:
        raise typer.Exit(1)


@app.command("export-hf")
@friendly_errors
def export_hf_cmd(
    adapter_id: str,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Directory to write to.")]
    = None,
    home: HomeOpt = None,
) -> None:
    """Write a Hugging Face README.md (YAML metadata + card) for the adapter."""
    path = hf_export.export_hf(_home(home), adapter_id, out)
    console.print(f"wrote {path}")


@app.command("baseline")
@friendly_errors
def baseline_cmd(
    adapter_id: Annotated[str | None, typer.Argument(help="Adapter id, name@version.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every registered, non-retired adapter.")]
    = False,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Compute an adapter's drift baseline from its lineage and bind it to its model card."""
    from lora_router.router.drift.baselines import attach_baseline, base_token_counter

    if (adapter_id is None) == (not all_):
        raise CliError("give exactly one of ADAPTER_ID or --all")
    h = _home(home)
    store = RegistryStore(h)
    ids = [adapter_id] if adapter_id else [
        a for a in store.list_model_ids() if store.get_model_card(a).status != "retired"]
    counter = base_token_counter(h)
    done = []
    for aid in ids:
        baseline, card = attach_baseline(h, aid, token_counter=counter)
        assert card.baseline is not None
        done.append({"adapter_id": aid, "path": card.baseline.path,
                     "sha256": card.baseline.sha256, "n": baseline.n, "gates": baseline.gates})
        if not as_json:
            gates = " ".join(f"{k} {v:.3f}" for k, v in baseline.gates.items()) or "no gates"
            console.print(f"{aid}: baseline {card.baseline.path} ({baseline.n} rows; "
                          f"{gates}) {card.baseline.sha256}", highlight=False)
    if as_json:
        _echo_json(done)
    elif not done:
        console.print("no registered adapters: nothing to do")
