"""Lineage records, after the seed chapter: dataset card, model card, run manifest.

Stored as YAML (human-reviewable, diff-friendly) by :mod:`registry.store`. Every field of
the chapter's examples is here; hashes are computed by the registry, never typed in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lora_router.ground.ids import check_card_id, parse_adapter_id

LifecycleStatus = Literal["registered", "shadow", "canary", "live", "retired"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSource(_Card):
    name: str
    owner: str
    license: str
    # none | redacted | present | unknown: "none" is a claim someone must make, never a
    # default (validate warns on "unknown")
    pii: str = "unknown"
    generator: str | None = None
    verified: str | None = None


class Splits(_Card):
    rule: str
    train: float = Field(ge=0, le=1)
    val: float = Field(ge=0, le=1)
    test: float = Field(ge=0, le=1)


class SubjectManifest(_Card):
    """Keyed hashes of the data subjects (e.g. customer ids) whose records are in the set.

    ``hmac-sha256``: HMAC under a secret key kept outside the card (see
    :mod:`registry.subjects`); the card holds only the key's id. ``salted-sha256``: the
    older scheme, salt in the card (reversible for low-entropy ids; still read).
    """

    kind: str = "customer_id"
    scheme: Literal["hmac-sha256", "salted-sha256"] = "salted-sha256"  # old cards: no field
    key_id: str | None = None
    salt: str | None = None
    hashes: list[str] = Field(default_factory=list)
    # split (a data file's path without its suffix: train, val, test) -> the hashes of the
    # subjects with records in it; None on cards from before per-split manifests
    splits: dict[str, list[str]] | None = None

    @model_validator(mode="after")
    def _split_union(self) -> SubjectManifest:
        if self.splits is not None and set[str]().union(*self.splits.values()) != set(self.hashes):
            raise ValueError("a subject manifest's splits must hold exactly its hashes")
        return self

    @model_validator(mode="after")
    def _scheme(self) -> SubjectManifest:
        if self.scheme == "hmac-sha256" and (self.key_id is None or self.salt is not None):
            raise ValueError("an hmac-sha256 subject manifest records a key_id and no salt")
        if self.scheme == "salted-sha256" and self.salt is None:
            raise ValueError("a salted-sha256 subject manifest needs its salt")
        return self


class DatasetCard(_Card):
    id: str
    hash: str  # sha256 over the exact bytes of ``files`` (ground.hashing.tree_hash)
    files: dict[str, str] = Field(default_factory=dict)  # relpath under data/<id>/ -> sha256
    sources: list[DataSource]
    consent_basis: str
    labeler_instructions_version: str
    measured: dict[str, Any] = Field(default_factory=dict)
    splits: Splits
    excluded: list[str] = Field(default_factory=list)
    subjects: SubjectManifest | None = None
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_card_id(v, "dataset")


class BaseModelRef(_Card):
    name: str
    version: str
    hash: str


class Method(_Card):
    type: Literal["lora"] = "lora"
    r: int = Field(ge=1)
    alpha: float = Field(gt=0)
    objective: str = "sft"
    target_modules: list[str] = Field(default_factory=list)


class StatusChange(_Card):
    status: LifecycleStatus
    at: datetime = Field(default_factory=utcnow)
    by: str = "unknown"
    reason: str = ""


class ArtifactRef(_Card):
    """A file derived from a card's lineage (e.g. a drift baseline), bound by its hash."""

    path: str  # relative to the home (registry/baselines/<id>.json)
    sha256: str  # ground.hashing.sha256_file of the file's bytes


class ModelCard(_Card):
    id: str  # name@version, the adapter id
    base_model: BaseModelRef
    method: Method
    trained_on: str  # dataset card id
    run_manifest: str  # run manifest id
    eval: dict[str, float] = Field(default_factory=dict)  # overall and per slice (slice_es)
    intended_use: str
    out_of_scope: list[str] = Field(default_factory=list)
    known_limitations: list[str] = Field(default_factory=list)
    rollback_target: str | None = None
    adapter_hash: str = ""  # tree hash of adapter_files
    adapter_files: dict[str, str] = Field(default_factory=dict)  # relpath -> sha256
    # drift baseline computed from the lineage (router.drift.baselines); None: not computed
    baseline: ArtifactRef | None = None
    status: LifecycleStatus = "registered"
    history: list[StatusChange] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        parse_adapter_id(v)
        return v

    def moved_to(self, status: LifecycleStatus, by: str, reason: str) -> ModelCard:
        """A copy in ``status``, with the move appended to its history (no checks)."""
        change = StatusChange(status=status, by=by, reason=reason)
        return self.model_copy(update={"status": status, "history": [*self.history, change]})

    @field_validator("rollback_target")
    @classmethod
    def _rollback(cls, v: str | None) -> str | None:
        if v is not None:
            parse_adapter_id(v)
        return v


class Hardware(_Card):
    device: str
    cpu: str = ""
    threads: int = 1
    gpu: str | None = None


class Checkpoint(_Card):
    location: str  # path relative to the home (adapters/<name>/<version>)
    hash: str


class RunManifest(_Card):
    id: str
    code_version: str  # git commit of the trainer code (or "unknown")
    seed: int
    hardware: Hardware
    libraries: dict[str, str] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    config: dict[str, Any] = Field(default_factory=dict)  # the full training config
    checkpoint: Checkpoint

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_card_id(v, "run manifest")
