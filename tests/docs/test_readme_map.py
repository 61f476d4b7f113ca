"""The README's package map ("How it works" → "Packages") matches the tree.

Every import-namespace folder (``package-dir`` in pyproject.toml) has a row, and no row names
a folder that is not one; every subpackage is named in its folder's row; every backticked
module or ``module.attribute`` in a row, and every ``lora_router.…`` name in the section,
exists.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FOLDERS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "setuptools"]["package-dir"]
TICKED = re.compile(r"`([^`]+)`")


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start:end if end != -1 else None]


def _rows() -> dict[str, str]:
    """folder -> what it owns, from the table under "### Packages"."""
    table = _section("### Packages")
    rows: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (len(cells) == 3 and re.fullmatch(r"`[a-z_]+/`", cells[0])
                and cells[1] != "(not installed)"):
            rows[cells[0].strip("`").rstrip("/")] = cells[2]
    return rows


def _resolves(package: str, name: str) -> bool:
    """``name`` (``peft_engine``, ``flags/``, ``factory.build_engine``) exists in ``package``."""
    name = name.split("(")[0].rstrip("/")
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join([package, *parts[:cut]])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent is a module, not a package
            found = False
        if found:
            obj: object = importlib.import_module(module)
            for attr in parts[cut:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


def test_every_package_folder_has_a_row_and_no_other() -> None:
    assert sorted(_rows()) == sorted(FOLDERS.values())


def test_every_subpackage_is_named_in_its_row() -> None:
    missing = [
        f"{folder}/{sub.name}/"
        for folder, owns in _rows().items()
        for sub in sorted((ROOT / folder).iterdir())
        if (sub / "__init__.py").is_file() and f"`{sub.name}/`" not in owns
    ]
    assert missing == []


def test_every_name_in_a_row_exists() -> None:
    unknown = [
        f"{folder}: `{name}`"
        for folder, owns in _rows().items()
        for name in TICKED.findall(owns)
        if re.fullmatch(r"[a-z_][a-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/?(\(.*\))?", name)
        and not _resolves(f"lora_router.{folder}", name)
    ]
    assert unknown == []


def test_every_dotted_name_in_how_it_works_exists() -> None:
    section = _section("## How it works")
    names = set(re.findall(r"\blora_router(?:\.[A-Za-z_][A-Za-z0-9_]*)+", section))
    assert names, "the request's path names its modules"
    unknown = sorted(n for n in names
                     if not _resolves("lora_router", n.removeprefix("lora_router.")))
    assert unknown == []
