"""Subject manifests: keyed hashes of the data subjects in a dataset, and their key.

A dataset card lists its subjects (customer ids, e-mails) as HMAC-SHA256 digests under a
secret key that is never in the card, so a card that leaks cannot be reversed by
enumerating low-entropy ids. The key is ``LORA_ROUTER_SUBJECT_KEY`` when set, else the
home's ``registry/.subject_key`` (32 random bytes, created with mode 0600 the first time a
manifest is written; not part of any card or of ``validate``'s hash checks). The card
records only the scheme and a key id (the first 8 hex digits of the key's sha256), so a
query made with another key (or none) answers "unknown", never a false "no".

A manifest also records which split each subject's records are in (``splits``: the data
file's path without its suffix, e.g. ``train``, ``val``, ``test``), so a deletion request is
answered by what reached the weights, not by what the dataset holds. Manifests written before
that (no ``splits``) are still read: their subjects may be in any split, and answers built on
them say so (``SubjectMatch.splits`` is None).

Cards written before keyed manifests (scheme ``salted-sha256``, salt in the card) are still
read; ``validate`` warns that they are reversible.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lora_router.ground.errors import RegistryError
from lora_router.ground.hashing import salted_hash
from lora_router.ground.home import Home
from lora_router.registry.cards import SubjectManifest

KEY_ENV = "LORA_ROUTER_SUBJECT_KEY"
KEY_FILE = ".subject_key"
HMAC_SCHEME: Final = "hmac-sha256"


def key_path(home: Home) -> Path:
    return home.registry_dir / KEY_FILE


def key_id(key: bytes) -> str:
    """What a card records about its key: enough to tell keys apart, nothing to reverse."""
    return hashlib.sha256(key).hexdigest()[:8]


def load_key(home: Home, *, create: bool = False, secret: str | None = None) -> bytes | None:
    """The subject key: ``secret``, else ``$LORA_ROUTER_SUBJECT_KEY``, else the home's key
    file; created there (0600, 32 random bytes) when ``create`` and missing, else None."""
    # read here rather than in Settings: the registry is used without a Settings object
    # (demo build, tests, library callers) and the key must be the same for all of them
    secret = secret if secret is not None else os.environ.get(KEY_ENV) or None
    if secret is not None:
        return secret.encode()
    path = key_path(home)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def subject_hash(value: str, key: bytes) -> str:
    """HMAC-SHA256 of a normalised subject value (stripped, lower-case)."""
    digest = hmac.new(key, value.strip().lower().encode(), hashlib.sha256).hexdigest()
    return f"{HMAC_SCHEME}:{digest}"


def subject_manifest(
    home: Home,
    values: Iterable[str] | None = None,
    *,
    splits: Mapping[str, Iterable[str]] | None = None,
    kind: str = "customer_id",
    secret: str | None = None,
) -> SubjectManifest:
    """Keyed hashes of the data subjects (the values and the key are not kept): per split
    when ``splits`` (split -> values) is given, the manifest's hashes being their union;
    from ``values`` alone, without split membership (answers then count every split)."""
    if (values is None) == (splits is None):
        raise RegistryError("a subject manifest is made from values or from splits, not both")
    key = load_key(home, create=True, secret=secret)
    assert key is not None  # create=True always yields a key
    by_split = None
    if splits is not None:
        by_split = {name: _hashes(vs, key) for name, vs in sorted(splits.items())}
        hashes = sorted(set[str]().union(*by_split.values()))
    else:
        hashes = _hashes(values or [], key)
    return SubjectManifest(kind=kind, scheme=HMAC_SCHEME, key_id=key_id(key), hashes=hashes,
                           splits=by_split)


def _hashes(values: Iterable[str], key: bytes) -> list[str]:
    return sorted({subject_hash(v, key) for v in values if str(v).strip()})


@dataclass(frozen=True)
class SubjectMatch:
    """A manifest's answer for one value: ``digest`` when in it, with the ``splits`` holding
    its records (None: the manifest records no split membership); ``unknown`` says why the
    manifest could not answer (no key, another key); digest and unknown None: not in it."""

    digest: str | None = None
    unknown: str | None = None
    splits: tuple[str, ...] | None = None


def match_subject(home: Home, manifest: SubjectManifest, value: str) -> SubjectMatch:
    """Is ``value`` in ``manifest``, and in which splits? Keyed manifests use the home's
    subject key."""
    if manifest.scheme == "salted-sha256":
        if manifest.salt is None:
            raise RegistryError("a salted-sha256 subject manifest without its salt")
        digest = salted_hash(value, manifest.salt)
    else:
        key = load_key(home)
        if key is None:
            return SubjectMatch(unknown=(
                f"no subject key (set {KEY_ENV} or restore {key_path(home)}); the manifest "
                f"was made with key {manifest.key_id}"))
        if key_id(key) != manifest.key_id:
            return SubjectMatch(unknown=(
                f"the subject key in use ({key_id(key)}) is not the one the manifest was "
                f"made with ({manifest.key_id})"))
        digest = subject_hash(value, key)
    if digest not in set(manifest.hashes):
        return SubjectMatch()
    if manifest.splits is None:
        return SubjectMatch(digest=digest)
    return SubjectMatch(digest=digest, splits=tuple(
        name for name, hashes in sorted(manifest.splits.items()) if digest in set(hashes)))
