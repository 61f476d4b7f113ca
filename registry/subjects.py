"""Subject manifests: keyed hashes of the data subjects in a dataset, and their key.

A dataset card lists its subjects (customer ids, e-mails) as HMAC-SHA256 digests under a
secret key that is never in the card, so a card that leaks cannot be reversed by
enumerating low-entropy ids. The key is ``LORA_ROUTER_SUBJECT_KEY`` when set, else the
home's ``registry/.subject_key`` (32 random bytes, created with mode 0600 the first time a
manifest is written; not part of any card or of ``validate``'s hash checks). The card
records only the scheme and a key id (the first 8 hex digits of the key's sha256), so a
query made with another key (or none) answers "unknown", never a false "no".

Cards written before keyed manifests (scheme ``salted-sha256``, salt in the card) are still
read; ``validate`` warns that they are reversible.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from registry.cards import SubjectManifest
from registry.errors import RegistryError
from registry.hashing import salted_hash
from registry.home import Home

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
    home: Home, values: Iterable[str], *, kind: str = "customer_id", secret: str | None = None
) -> SubjectManifest:
    """Keyed hashes of the data subjects (the values and the key are not kept)."""
    key = load_key(home, create=True, secret=secret)
    assert key is not None  # create=True always yields a key
    hashes = sorted({subject_hash(v, key) for v in values if str(v).strip()})
    return SubjectManifest(kind=kind, scheme=HMAC_SCHEME, key_id=key_id(key), hashes=hashes)


@dataclass(frozen=True)
class SubjectMatch:
    """A manifest's answer for one value: ``digest`` when in it; ``unknown`` says why the
    manifest could not answer (no key, another key); both None means: not in it."""

    digest: str | None = None
    unknown: str | None = None


def match_subject(home: Home, manifest: SubjectManifest, value: str) -> SubjectMatch:
    """Is ``value`` in ``manifest``? Uses the home's subject key for keyed manifests."""
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
    return SubjectMatch(digest=digest if digest in set(manifest.hashes) else None)
