"""Content hashes: the exact bytes behind a base model, an adapter or a dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def file_hashes(root: Path, files: Iterable[Path] | None = None) -> dict[str, str]:
    """``{relative posix path: sha256}`` for ``files`` (default: every file under ``root``)."""
    paths = (
        sorted(files) if files is not None else sorted(p for p in root.rglob("*") if p.is_file())
    )
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in paths}


def tree_hash(hashes: dict[str, str]) -> str:
    """One digest over a ``{relpath: sha256}`` map (order-independent, names included)."""
    h = hashlib.sha256()
    for rel in sorted(hashes):
        h.update(rel.encode())
        h.update(b"\0")
        h.update(hashes[rel].encode())
        h.update(b"\n")
    return f"sha256:{h.hexdigest()}"


def salted_hash(value: str, salt: str) -> str:
    """Hash of a data subject (customer id, e-mail) so a manifest never holds the value."""
    return "sha256:" + hashlib.sha256(f"{salt}\0{value.strip().lower()}".encode()).hexdigest()
