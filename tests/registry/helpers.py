"""Small helpers shared by the registry tests: run the CLI, flip a byte, edit a card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from lora_router.ground.home import Home
from lora_router.router.cli.main import app


def cli(home: Home, *args: str) -> Any:
    """Run ``lora-router registry ARGS --home HOME``; returns click's Result."""
    return CliRunner().invoke(app, ["registry", *args, "--home", str(home.root)])


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edit_yaml(path: Path, **changes: Any) -> None:
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def set_routes(home: Home, text: str) -> None:
    home.routes_file.write_text(text)
