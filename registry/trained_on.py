"""The deletion-request answer: is a source, dataset or data subject in an adapter's weights?

For a data subject the answer follows what reached the weights, not what a dataset holds:
the subject manifest says which splits hold the subject's records, and each adapter's run
manifest says which splits its training read (:mod:`registry.training_use`). Records in
the train split are in the weights ("yes", a retrain must exclude them); records only in a
split the run never read (the test split, an unused validation split) are not ("no": the
dataset still holds them, to be deleted there); a validation split used for early stopping
or checkpoint selection chose the weights kept and is counted as reaching them, and said.
A manifest without split membership, or a run that does not say what it read, is answered
as if every split reached the weights, and the answer says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lora_router.ground.errors import RecordNotFound, RegistryError
from lora_router.ground.home import Home
from lora_router.registry.cards import DatasetCard, ModelCard
from lora_router.registry.questions import RouteRef, Routes, load_routes, route_refs
from lora_router.registry.store import RegistryStore
from lora_router.registry.subjects import match_subject
from lora_router.registry.training_use import REACHED, RunUse, SplitUse, adapter_run_use

SplitHit = tuple[str | None, SplitUse]  # (split holding the records or None: unrecorded, use)


@dataclass
class AdapterHit:
    """An adapter trained on a dataset the query hit: where it serves, and for each split
    holding the records, how its run used that split (``splits``)."""

    adapter_id: str
    status: str
    dataset_id: str
    serving: list[RouteRef] = field(default_factory=list)
    splits: list[SplitHit] = field(default_factory=list)
    validation: str = ""  # how its run used validation

    @property
    def in_weights(self) -> bool:
        return any(use in REACHED for _, use in self.splits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter_id,
            "status": self.status,
            "dataset": self.dataset_id,
            "in_weights": self.in_weights,
            "splits": [{"split": s, "use": u} for s, u in self.splits],
            "validation": self.validation,
            "serving": [{"route": r.route, "arm": r.arm, "percent": r.percent}
                        for r in self.serving],
        }


@dataclass(frozen=True)
class DatasetHit:
    """A dataset holding what was asked about; for a subject, the splits holding its
    records (None: the manifest records no split membership) and its keyed digest."""

    dataset_id: str
    splits: tuple[str, ...] | None = None
    digest: str | None = None
    kind: str = "subject"


@dataclass
class TrainedOnAnswer:
    """The deletion-request answer: which datasets and adapters, which splits reached the
    weights, where those adapters serve, and what a retrain has to leave out."""

    query: dict[str, str]
    hits: list[DatasetHit]
    adapters: list[AdapterHit]
    retrain_exclude: list[str]
    # datasets that cannot answer a subject query: {dataset id: why} (no subject manifest,
    # no subject key, another key)
    unknown: dict[str, str] = field(default_factory=dict)
    data_only: list[str] = field(default_factory=list)  # records in the data, not the weights
    notes: list[str] = field(default_factory=list)  # why an answer had to be conservative

    @property
    def datasets(self) -> list[str]:
        return [h.dataset_id for h in self.hits]

    @property
    def found(self) -> bool:
        """In the data: some dataset holds it (see :attr:`answer` for the weights)."""
        return bool(self.hits)

    @property
    def answer(self) -> Literal["yes", "no", "unknown"]:
        """``yes``: in the weights (a subject) or in a dataset card (a source, a dataset)."""
        reached = any(a.in_weights for a in self.adapters) if "subject" in self.query \
            else self.found
        if reached:
            return "yes"
        return "unknown" if self.unknown else "no"

    @property
    def summary(self) -> str:
        """One line: what reached the weights, or why nothing did."""
        if self.answer == "yes":
            names = sorted({a.adapter_id for a in self.adapters if a.in_weights})
            return f"in the weights of {', '.join(names)}" if names \
                else f"in dataset(s) {', '.join(self.datasets)}, which no adapter trained on"
        if self.answer == "unknown":
            return f"unknown: dataset(s) {', '.join(sorted(self.unknown))} cannot answer"
        splits = sorted({s for h in self.hits for s in h.splits or ()})
        if splits:
            return (f"not in the weights ({', '.join(splits)} "
                    f"split{'s' if len(splits) > 1 else ''} only)")
        return "not in the weights (in no dataset)" if not self.hits \
            else "not in the weights (no adapter trained on it)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "answer": self.answer,
            "summary": self.summary,
            "datasets": self.datasets,
            "hits": [{"dataset": h.dataset_id,
                      "splits": list(h.splits) if h.splits is not None else None}
                     for h in self.hits],
            "unknown_datasets": sorted(self.unknown),
            "unknown_reasons": self.unknown,
            "adapters": [a.to_dict() for a in self.adapters],
            "retrain_exclude": self.retrain_exclude,
            "data_only": self.data_only,
            "notes": self.notes,
        }


def trained_on(
    home: Home,
    *,
    source: str | None = None,
    dataset: str | None = None,
    subject: str | None = None,
    routes: Routes | None = None,
) -> TrainedOnAnswer:
    """Every adapter whose training reached the source, dataset or subject (exactly one of
    the three), which splits, where each serves now, and what a retrain must exclude.

    A dataset id or source name that no dataset card knows raises ``RecordNotFound``
    (naming the known ones): a typo must not read as "no". A subject is matched by keyed
    hash, per split (see the module docstring).
    """
    given = {k: v for k, v in (("source", source), ("dataset", dataset), ("subject", subject))
             if v is not None}
    if len(given) != 1:
        raise RegistryError("ask about exactly one of source, dataset or subject")
    store = RegistryStore(home)
    cards = [store.get_dataset_card(i) for i in store.list_dataset_ids()]
    refs = route_refs(load_routes(home, routes))
    models = [store.get_model_card(i) for i in store.list_model_ids()]
    uses = {m.id: adapter_run_use(store, m) for m in models}
    if subject is not None:
        # the reply never echoes a subject's value, only its keyed hash
        answer = TrainedOnAnswer({"subject": "<given>"}, [], [], [])
        _subject_hits(home, cards, subject, answer)
    else:
        answer = TrainedOnAnswer({k: str(v) for k, v in given.items()}, [], [], [])
        _named_hits(cards, source, dataset, answer)
    _adapter_hits(models, uses, refs, answer)
    return answer


def _named_hits(cards: list[DatasetCard], source: str | None, dataset: str | None,
                answer: TrainedOnAnswer) -> None:
    for card in cards:
        if dataset is not None and card.id == dataset:
            answer.hits.append(DatasetHit(card.id))
            answer.retrain_exclude.append(f"dataset {card.id} ({card.hash})")
        elif source is not None and any(s.name == source for s in card.sources):
            answer.hits.append(DatasetHit(card.id))
            answer.retrain_exclude.append(f"source {source} (in dataset {card.id})")
    if answer.hits:
        return
    if dataset is not None:
        raise RecordNotFound(f"no dataset card {dataset!r}; known datasets: "
                             f"{', '.join(c.id for c in cards) or 'none'}", dataset_id=dataset)
    known = sorted({s.name for c in cards for s in c.sources})
    raise RecordNotFound(f"no dataset card lists source {source!r}; known sources: "
                         f"{', '.join(known) or 'none'}", source=source)


def _subject_hits(home: Home, cards: list[DatasetCard], value: str,
                  answer: TrainedOnAnswer) -> None:
    for card in cards:
        if card.subjects is None:
            answer.unknown[card.id] = "no subject manifest"
            continue
        match = match_subject(home, card.subjects, value)
        if match.unknown is not None:
            answer.unknown[card.id] = match.unknown
        if match.digest is None:
            continue
        answer.hits.append(DatasetHit(card.id, match.splits, match.digest, card.subjects.kind))
        if match.splits is None:
            answer.notes.append(
                f"dataset {card.id}: its subject manifest records no split membership (a card "
                "written before per-split manifests), so every split is counted as in the "
                "weights; re-register the dataset for a per-split answer")


def _adapter_hits(models: list[ModelCard], uses: Mapping[str, RunUse],
                  refs: Mapping[str, list[RouteRef]], answer: TrainedOnAnswer) -> None:
    by_dataset = {h.dataset_id: h for h in answer.hits}
    for m in models:
        hit = by_dataset.get(m.trained_on)
        if hit is None:
            continue
        use = uses[m.id]
        answer.adapters.append(AdapterHit(
            m.id, m.status, m.trained_on, refs.get(m.id, []), _split_uses(hit, use),
            use.validation))
        if use.weights is None and use.validation not in answer.notes:
            answer.notes.append(use.validation)
    if "subject" in answer.query:
        _subject_exclusions(answer)


def _split_uses(hit: DatasetHit, use: RunUse) -> list[SplitHit]:
    if hit.digest is None:  # a source or a whole dataset: the splits the run trained on
        return [(s, "weights") for s in sorted(use.weights)] if use.weights is not None \
            else [(None, "unknown")]
    splits: tuple[str | None, ...] = hit.splits if hit.splits is not None else (None,)
    return [(s, use.use_of(s)) for s in splits]


def _subject_exclusions(answer: TrainedOnAnswer) -> None:
    """Split each subject hit into what a retrain must exclude (splits that reached some
    adapter's weights) and what only the data holds."""
    for hit in answer.hits:
        reached = {s for a in answer.adapters if a.dataset_id == hit.dataset_id
                   for s, use in a.splits if use in REACHED}
        splits: tuple[str | None, ...] = hit.splits if hit.splits is not None else (None,)
        for split in splits:
            where = f"records in dataset {hit.dataset_id}, " + (
                f"split {split}" if split is not None else "split not recorded")
            if split in reached:
                answer.retrain_exclude.append(f"{hit.kind} {hit.digest} ({where})")
            else:
                answer.data_only.append(f"{hit.kind} {hit.digest} ({where})")
