"""Rich rendering of registry answers for ``lora-router registry`` (no logic here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.tree import Tree

from lora_router.router.cli.common import console
from lora_router.router.cli.output import Col, Listing, print_listing

if TYPE_CHECKING:
    from lora_router.registry.integrity import Problem
    from lora_router.registry.trained_on import TrainedOnAnswer
    from lora_router.training.reproduce import ReproduceResult


def print_problems(problems: list[Problem]) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if not problems:
        console.print("[green]registry valid[/green]: every link resolves, every hash matches")
        return
    for p in problems:
        tag = "[red]ERROR[/red]" if p.severity == "error" else "[yellow]warning[/yellow]"
        console.print(f"{tag} [{p.kind}] {p}", highlight=False, soft_wrap=True)
    verdict = f"[red]{len(errors)} problem(s)[/red]" if errors else "[green]valid[/green]"
    console.print(f"{verdict}, {len(problems) - len(errors)} warning(s)")


def print_lineage(tree_data: dict[str, Any]) -> None:
    mc = tree_data["model_card"]
    base = mc["base_model"]
    root = Tree(f"[bold]model card {mc['id']}[/bold] ({mc['status']}, {mc['adapter_hash']})")
    root.add(f"base {base['name']} {base['version']} ({base['hash']})")
    root.add(f"method {mc['method']}")
    root.add(f"eval {mc['eval']}")
    root.add(f"rollback chain: {' -> '.join(tree_data['rollback_chain']) or 'none'}")
    run = tree_data["run_manifest"]
    run_node = root.add(f"[bold]run manifest {mc['run_manifest']}[/bold]"
                        + ("" if run else " [red](missing)[/red]"))
    if run:
        run_node.add(f"code {run['code_version']}, seed {run['seed']}, "
                     f"hardware {run['hardware']['device']}")
        run_node.add(f"{run['started_at']} -> {run['finished_at']}")
        run_node.add(f"checkpoint {run['checkpoint']['location']} ({run['checkpoint']['hash']})")
    ds = tree_data["dataset_card"]
    ds_node = run_node.add(f"[bold]dataset card {mc['trained_on']}[/bold]"
                           + (f" ({ds['hash']})" if ds else " [red](missing)[/red]"))
    if ds:
        for src in ds["sources"]:
            ds_node.add(f"source {src['name']} (owner {src['owner']}, license {src['license']},"
                        f" pii {src['pii']})")
        ds_node.add(f"consent: {ds['consent_basis']}")
        ds_node.add(f"excluded: {', '.join(ds['excluded']) or 'none'}")
        ds_node.add(f"{len(ds['files'])} file(s)")
    console.print(root)


_USE_WORDS = {
    "weights": "in the weights (training data)",
    "selection": "validation used for early stopping / checkpoint selection only: it chose "
                 "the weights kept (counted as in them)",
    "unused": "not in the weights (its training never read this split)",
    "unknown": "counted as in the weights (split membership or the run's use not recorded)",
}


def print_trained_on(answer: TrainedOnAnswer) -> None:
    (what, _value), = answer.query.items()
    for ds_id, why in sorted(answer.unknown.items()):
        console.print(f"[yellow]UNKNOWN for {ds_id}[/yellow]: {why}, so this dataset cannot "
                      "answer", highlight=False, soft_wrap=True)
    for note in answer.notes:
        console.print(f"[yellow]note[/yellow]: {note}", highlight=False, soft_wrap=True)
    verdict = {"yes": "[red]YES[/red]", "no": "[green]NO[/green]",
               "unknown": "[yellow]UNKNOWN[/yellow]"}[answer.answer]
    if not answer.found:
        if answer.answer == "no":
            console.print(f"{verdict}: no dataset card includes this {what}; "
                          "no adapter was trained on it")
        return
    where = "; ".join(f"{h.dataset_id}" + (f" (split {', '.join(h.splits)})" if h.splits else "")
                      for h in answer.hits)
    console.print(f"{verdict}: {answer.summary}: this {what} is in dataset(s) {where}",
                  highlight=False, soft_wrap=True)
    _print_adapters(answer)
    if answer.retrain_exclude:
        console.print("a retrain must exclude:")
        for item in answer.retrain_exclude:
            console.print(f"  - {item}", highlight=False, soft_wrap=True)
    if answer.data_only:
        console.print("in the data but in no adapter's weights (delete them from the dataset, "
                      "registered as a new id; no retrain needed for these):")
        for item in answer.data_only:
            console.print(f"  - {item}", highlight=False, soft_wrap=True)


def _print_adapters(answer: TrainedOnAnswer) -> None:
    if not answer.adapters:
        console.print("no adapter was trained on these datasets")
        return
    print_listing(Listing(
        [Col("adapter"), Col("status"), Col("dataset"), Col("serving now (route:arm)", wrap=True)],
        [[hit.adapter_id, hit.status, hit.dataset_id,
          ", ".join(str(r) for r in hit.serving) or "not routed"] for hit in answer.adapters],
    ))
    for hit in answer.adapters:
        for split, use in hit.splits:
            name = f"split {split}" if split is not None else "split not recorded"
            console.print(f"  {hit.adapter_id}: {name}: {_USE_WORDS[use]}", highlight=False,
                          soft_wrap=True)
        console.print(f"  {hit.adapter_id}: validation: {hit.validation}", highlight=False,
                      soft_wrap=True)


def print_base_impact(impact: dict[str, Any]) -> None:
    adapters = impact["adapters"]
    console.print(f"{len(adapters)} adapter(s) tied to base {impact['base']} "
                  f"(pinned base: {impact['pinned_base']})")
    print_listing(Listing(
        [Col("adapter"), Col("status"), Col("dataset"), Col("serving now", wrap=True),
         Col("action", wrap=True)],
        [[a["adapter"], a["status"], a["dataset"], ", ".join(a["serving"]) or "-", a["action"]]
         for a in adapters],
    ))
    for a in adapters:
        console.print(f"  {a['dataset']}: {a.get('dataset_hash')}", highlight=False)
    if adapters:
        console.print(f"plan: {impact['plan']}")


def print_reproduce(result: ReproduceResult) -> None:
    verdict = ("[green]IDENTICAL[/green]" if result.identical
               else "[red]DIFFERENT[/red]")
    console.print(f"{verdict}: {result.adapter_id} retrained with seed {result.seed}"
                  f" (recorded seed {result.recorded_seed})")
    console.print(f"  recorded {result.recorded_hash}", highlight=False)
    console.print(f"  new      {result.new_hash}", highlight=False)
