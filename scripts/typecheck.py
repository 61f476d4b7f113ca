"""mypy over the lora_router packages: ``python scripts/typecheck.py [mypy args]``.

The import namespace maps folders (``router/`` is ``lora_router.router``, see package-dir in
pyproject.toml); mypy does not run setuptools' editable-install finder, so this makes a
link tree ``build/typecheck/lora_router/<folder>`` -> ``<folder>`` (``mypy_path`` in
pyproject.toml) and runs mypy on the packages there (or on ``-m``/``-p`` given instead).
After the first run, plain ``mypy`` works too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def link_tree() -> Path:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    tree = ROOT / "build" / "typecheck"
    for name, folder in mapping.items():
        link = tree.joinpath(*name.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(ROOT / folder, link.parent)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    return tree


def main() -> int:
    link_tree()
    return subprocess.call([sys.executable, "-m", "mypy", *sys.argv[1:]], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
