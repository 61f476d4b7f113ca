"""Drift baselines from lineage: what an adapter version's inputs and labels looked like.

For one model card: the training rows of its dataset (the run manifest's ``train_file``,
formatted with the run's ``prompt_template`` / ``completion_template``, as the trainer did)
are run through the inference log's own feature function
(:func:`router.log.features.compute_features`, with the base's token counter and the
dataset's label set) and summarised: categorical features as frequency tables, numeric ones
as quantiles, the parsed labels as a distribution; the card's ``eval`` gives the release-gate
bars. The result (:class:`~router.drift.baseline_model.Baseline`) is written as canonical
JSON to ``registry/baselines/<adapter>.json`` and referenced from the model card with its
sha256 (``registry validate`` checks the hash).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lora_router.ground.errors import RegistryError
from lora_router.ground.hashing import sha256_file
from lora_router.ground.home import Home
from lora_router.registry.cards import ArtifactRef, ModelCard
from lora_router.registry.store import RegistryStore, registry_lock
from lora_router.router.drift.baseline_model import NO_LABEL, QUANTILE_LEVELS, Baseline
from lora_router.router.drift.baseline_source import gates_from_eval
from lora_router.router.log.features import TokenCounter, compute_features

BASELINES_DIR = "baselines"  # under <home>/registry/
CATEGORICAL = ("language",)
NUMERIC = ("chars", "words", "tokens")
DEFAULT_PROMPT = "Ticket: {text}\nCategory:"  # training.lora.TrainConfig's defaults
DEFAULT_COMPLETION = " {label}"
_DIGITS = 6


def baseline_path(home: Home, adapter_id: str) -> Path:
    """Where an adapter's baseline lives: ``<home>/registry/baselines/<adapter>.json``."""
    home.model_card_path(adapter_id)  # checks the id
    return home.registry_dir / BASELINES_DIR / f"{adapter_id}.json"


# -- summarising feature dicts ------------------------------------------------------------
def quantiles(values: Sequence[float], levels: Sequence[float] = QUANTILE_LEVELS) -> list[float]:
    """Quantiles at ``levels`` by linear interpolation between order statistics (numpy's
    default method); empty input gives an empty list."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return []
    out = []
    for q in levels:
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        out.append(round(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo), _DIGITS))
    return out


def frequencies(values: Iterable[str]) -> dict[str, float]:
    """``{value: fraction}``, keys sorted, fractions rounded to 6 digits."""
    counts = Counter(values)
    n = sum(counts.values())
    return {k: round(c / n, _DIGITS) for k, c in sorted(counts.items())} if n else {}


def flat_numeric(feats: Mapping[str, Any]) -> dict[str, float]:
    """The numeric features of one ``input_features`` dict, entity counts as
    ``entities.<kind>``."""
    out = {k: float(feats[k]) for k in NUMERIC if isinstance(feats.get(k), int | float)}
    for kind, count in sorted((feats.get("entities") or {}).items()):
        out[f"entities.{kind}"] = float(count)
    return out


def summarize(
    rows: Sequence[Mapping[str, Any]],
    *,
    adapter_id: str,
    gates: Mapping[str, float],
    computed_from: Sequence[str],
) -> Baseline:
    """A :class:`Baseline` from ``input_features`` dicts as the inference log stores them."""
    numeric: dict[str, list[float]] = {}
    for feats in rows:
        for key, value in flat_numeric(feats).items():
            numeric.setdefault(key, []).append(value)
    return Baseline(
        adapter_id=adapter_id,
        features={k: frequencies(str(f[k]) for f in rows if f.get(k) is not None)
                  for k in CATEGORICAL},
        numeric={k: quantiles(v) for k, v in sorted(numeric.items())},
        labels=frequencies(str(f.get("predicted_label") or NO_LABEL) for f in rows),
        gates=dict(gates),
        n=len(rows),
        computed_from=list(computed_from),
    )


# -- from a card's lineage ----------------------------------------------------------------
def feature_rows(
    records: Sequence[Mapping[str, Any]],
    *,
    labels: Sequence[str],
    token_counter: TokenCounter | None,
    prompt_template: str = DEFAULT_PROMPT,
    completion_template: str = DEFAULT_COMPLETION,
) -> list[dict[str, Any]]:
    """``input_features`` of dataset records (``text``, ``label``) as the log computes them
    for the prompt the adapter is served and the completion it is trained to answer."""
    out = []
    for r in records:
        prompt = prompt_template.format(text=" ".join(str(r["text"]).split()))
        output = completion_template.format(label=r["label"])
        out.append(compute_features(prompt, output, token_counter=token_counter, labels=labels))
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read dataset file {path}: {exc}", path=str(path)) from exc


def _label_set(data_dir: Path) -> list[str]:
    """Every label in the dataset's JSONL files (the route's label set at training time)."""
    labels: set[str] = set()
    for path in sorted(data_dir.glob("*.jsonl")):
        labels.update(str(r["label"]) for r in _read_jsonl(path) if "label" in r)
    return sorted(labels)


def base_token_counter(home: Home) -> TokenCounter:
    """The engine's token count for a prompt (the base's tokenizer, special tokens added,
    as :class:`adapters.decoding.Codec` encodes for the engine); ``RegistryError`` when the
    base's tokenizer cannot be loaded."""
    from transformers import AutoTokenizer

    from lora_router.adapters.decoding import Codec

    try:
        codec = Codec(AutoTokenizer.from_pretrained(str(home.base_dir)))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot load the base's tokenizer from {home.base_dir}: {exc}",
                            path=str(home.base_dir)) from exc
    return lambda text: len(codec.encode(text))


def compute_baseline(
    home: Home, adapter_id: str, *, token_counter: TokenCounter | None = None
) -> Baseline:
    """The baseline of a registered adapter from its card, run manifest and dataset files
    (``RegistryError`` when a link or file is missing or the data no longer matches)."""
    store = RegistryStore(home)
    card = store.get_model_card(adapter_id)
    config = store.get_run_manifest(card.run_manifest).config
    dataset = store.get_dataset_card(card.trained_on)
    train_file = str(config.get("train_file", "train.jsonl"))
    recorded = dataset.files.get(train_file)
    path = home.dataset_dir(dataset.id) / train_file
    if recorded is None or not path.is_file() or sha256_file(path) != recorded:
        raise RegistryError(
            f"{adapter_id}: training file {dataset.id}/{train_file} is missing or does not "
            "match its dataset card", adapter=adapter_id, path=str(path))
    feats = feature_rows(
        _read_jsonl(path),
        labels=_label_set(home.dataset_dir(dataset.id)),
        token_counter=token_counter,
        prompt_template=str(config.get("prompt_template", DEFAULT_PROMPT)),
        completion_template=str(config.get("completion_template", DEFAULT_COMPLETION)),
    )
    return summarize(
        feats, adapter_id=adapter_id, gates=dict(sorted(gates_from_eval(card.eval).items())),
        computed_from=[f"dataset:{dataset.id}/{train_file} {recorded}",
                       f"dataset-card:{dataset.id} {dataset.hash}",
                       f"model-card:{card.id} eval"],
    )


def write_baseline(home: Home, baseline: Baseline) -> ArtifactRef:
    """Write the baseline as canonical JSON (atomically); its reference for the card."""
    path = baseline_path(home, baseline.adapter_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(baseline.model_dump(mode="json"), indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ArtifactRef(path=path.relative_to(home.root).as_posix(), sha256=sha256_file(path))


def read_baseline(home: Home, card: ModelCard) -> Baseline | None:
    """The card's baseline, checked against its recorded hash (``None``: none recorded;
    ``RegistryError``: the file is missing, changed or unreadable)."""
    ref = card.baseline
    if ref is None:
        return None
    path = home.root / ref.path
    if not path.is_file() or sha256_file(path) != ref.sha256:
        raise RegistryError(f"{card.id}: baseline {ref.path} is missing or does not match "
                            "its model card", adapter=card.id, path=ref.path)
    return Baseline.model_validate_json(path.read_text(encoding="utf-8"))


def load_baseline(home: Home, adapter_id: str) -> Baseline | None:
    """The stored baseline of ``adapter_id``, hash-checked (``None``: its card records none);
    the monitor's loader (:data:`router.drift.baseline_source.StoredLoader`)."""
    return read_baseline(home, RegistryStore(home).get_model_card(adapter_id))


def attach_baseline(
    home: Home, adapter_id: str, *, token_counter: TokenCounter | None = None
) -> tuple[Baseline, ModelCard]:
    """Compute, write and reference an adapter's baseline; returns it and the updated card."""
    baseline = compute_baseline(home, adapter_id, token_counter=token_counter)
    ref = write_baseline(home, baseline)
    store = RegistryStore(home)
    with registry_lock(home):
        card = store.get_model_card(adapter_id).model_copy(update={"baseline": ref})
        store.put_model_card(card)
    return baseline, card
