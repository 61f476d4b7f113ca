"""The README's CLI table is the CLI's own command list (scripts/cli_table.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from typer.main import get_command

from lora_router.router.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_table", ROOT / "scripts" / "cli_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cli_table"] = module
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_matches_the_cli() -> None:
    script = _script()
    assert script.main(["--check"]) == 0, "run: python scripts/cli_table.py --write"


def test_every_command_of_the_cli_is_in_the_readme_table_and_nothing_else() -> None:
    script = _script()
    table = script.readme_block((ROOT / "README.md").read_text())
    names = [" ".join(path) for path, _ in script.leaves(get_command(app))]
    assert {"log tail", "log stats", "feedback import", "audit", "route show"} <= set(names)
    for name in names:
        assert f"`{name}" in table, name
    assert "bench/" not in table and "rows/s" not in table  # no bench in the command table
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert all(line.count(" | ") == 1 for line in rows), "two columns: area, commands"
