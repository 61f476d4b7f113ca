"""Pin the base model: record the content hash of its weight and tokenizer files.

At start the engine re-hashes ``<home>/base`` and refuses to start if it differs from
``<home>/base.lock.json`` (``BaseModelMismatch``): an adapter is only valid on the exact
bytes it was trained against.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lora_router.ground.errors import BaseModelMismatch, HomeNotInitialised
from lora_router.ground.hashing import file_hashes, tree_hash
from lora_router.ground.home import Home

# Files that define the model's behaviour; READMEs and other notes don't count.
_HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".py", ".tiktoken")


@dataclass(frozen=True)
class BaseLock:
    name: str
    version: str
    sha256: str
    files: dict[str, str]
    pinned_at: float


def _hashed_files(base_dir: Path) -> list[Path]:
    return sorted(
        p for p in base_dir.rglob("*") if p.is_file() and p.suffix in _HASHED_SUFFIXES
    )


def compute_base_hash(base_dir: Path) -> tuple[str, dict[str, str]]:
    files = file_hashes(base_dir, _hashed_files(base_dir))
    if not files:
        raise HomeNotInitialised(f"no model files under {base_dir}")
    return tree_hash(files), files


def pin_base(home: Home, name: str, version: str = "1") -> BaseLock:
    """Hash ``<home>/base`` and write the lock file."""
    digest, files = compute_base_hash(home.base_dir)
    lock = BaseLock(name=name, version=version, sha256=digest, files=files, pinned_at=time.time())
    home.base_lock.write_text(json.dumps(asdict(lock), indent=2, sort_keys=True) + "\n")
    return lock


def read_lock(home: Home) -> BaseLock:
    if not home.base_lock.is_file():
        raise HomeNotInitialised(
            f"{home.root} has no pinned base ({home.base_lock.name} missing); "
            "run `lora-router demo build` or `lora-router base pin`"
        )
    return BaseLock(**json.loads(home.base_lock.read_text()))


def verify_base(home: Home) -> BaseLock:
    """Re-hash the base and compare with the lock; raise ``BaseModelMismatch`` naming files."""
    lock = read_lock(home)
    digest, files = compute_base_hash(home.base_dir)
    if digest != lock.sha256:
        changed = sorted(
            f for f in set(files) | set(lock.files) if files.get(f) != lock.files.get(f)
        )
        raise BaseModelMismatch(
            f"base model files under {home.base_dir} do not match the pinned hash "
            f"{lock.sha256[:19]}… (changed: {', '.join(changed)}); refusing to start",
            changed=changed,
        )
    return lock
