"""The package layout holds: one import namespace, layers checked by import-linter."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
FOLDERS = CONFIG["tool"]["setuptools"]["package-dir"]  # lora_router.<x> -> <x>
OLD_IMPORT = re.compile(r"^\s*(from|import) (router|adapters|registry|ground|training|demo)\b",
                        re.M)


def test_layer_contracts_hold() -> None:
    """``lint-imports``: no module of a lower layer imports a higher one (pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_package_folder_is_packaged() -> None:
    """A subpackage missing from ``packages`` would be left out of the wheel."""
    found = sorted(
        f"{name}.{'.'.join(init.parent.relative_to(ROOT / folder).parts)}".rstrip(".")
        for name, folder in FOLDERS.items()
        for init in (ROOT / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts
    )
    assert sorted(CONFIG["tool"]["setuptools"]["packages"]) == found


def test_nothing_imports_the_folders_as_top_level_packages() -> None:
    """Only ``lora_router.*`` names: a bare ``router``/``adapters`` import would load a second
    copy of a module (and ``adapters`` is also AdapterHub's package name)."""
    offenders = [
        f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
        for top in [*FOLDERS.values(), "tests", "bench", "scripts"]
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
        for m in OLD_IMPORT.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
