"""`lora-router demo build` and `lora-router base pin|verify` through the real CLI app."""

from __future__ import annotations

from typer.testing import CliRunner

from lora_router.demo import build as B
from lora_router.ground.home import Home
from lora_router.registry.base_pin import read_lock
from lora_router.router.cli.main import app

runner = CliRunner()


def test_demo_build_help() -> None:
    result = runner.invoke(app, ["demo", "build", "--help"])
    assert result.exit_code == 0
    assert "--home" in result.output and "--force" in result.output


def test_demo_build_on_a_built_home_reports_without_rebuilding(demo_home: Home) -> None:
    result = runner.invoke(app, ["demo", "build", "--home", str(demo_home.root)])
    assert result.exit_code == 0, result.output
    assert "already built" in result.output
    assert B.V1 in result.output and B.V2 in result.output
    assert "slice_es" in result.output and "build time" in result.output
    # and the README's lines, ready to paste (tests/demo/test_readme_table.py checks them)
    for line in B.summary_lines(B.load_report(demo_home)):
        assert line in result.output


def test_demo_build_refuses_a_foreign_base_with_a_clean_error(copy_home: Home) -> None:
    (copy_home.root / B.REPORT_FILE).unlink()
    runner.invoke(app, ["base", "pin", "--home", str(copy_home.root), "--name", "my-base"])
    result = runner.invoke(app, ["demo", "build", "--home", str(copy_home.root)])
    assert result.exit_code == 2
    assert "my-base" in result.output and "Traceback" not in result.output


def test_base_pin_and_verify(copy_home: Home) -> None:
    h = str(copy_home.root)
    assert runner.invoke(app, ["base", "verify", "--home", h]).exit_code == 0
    before = read_lock(copy_home)
    (copy_home.base_dir / "generation_config.json").write_text("{}\n")
    bad = runner.invoke(app, ["base", "verify", "--home", h])
    assert bad.exit_code == 2 and "generation_config.json" in bad.output
    pinned = runner.invoke(app, ["base", "pin", "--home", h, "--version", "2"])
    assert pinned.exit_code == 0, pinned.output
    after = read_lock(copy_home)
    assert after.name == before.name and after.version == "2"
    assert after.sha256 != before.sha256
    assert runner.invoke(app, ["base", "verify", "--home", h]).exit_code == 0


def test_base_pin_needs_a_name_on_a_fresh_home(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["base", "pin", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "--name" in result.output
