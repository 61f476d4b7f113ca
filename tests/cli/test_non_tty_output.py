"""Output into a log or a pipe (not a terminal): whole lines, nothing cut to 80 columns."""

from __future__ import annotations

import pytest

from lora_router.demo.progress import BuildProgress
from lora_router.router.cli.common import console

LONG = "support-triage@v2: en 0.96 es 0.02 " * 6  # ~210 characters


def test_demo_build_stages_are_whole_lines_in_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    with BuildProgress(True) as bp:
        bp.stage("data", "synthetic tickets (English and Spanish, made-up customer ids)")
        bp.done("data", LONG)
        bp.stage("pretrain", "pre-train tiny base", 3)
        for step in (1, 2, 3):
            bp.update("pretrain", step, f"loss {1 / step:.3f}")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "synthetic tickets (English and Spanish, made-up customer ids) ..."
    assert lines[1].startswith("synthetic tickets (English and Spanish, made-up customer ids):"
                               " done in ")
    assert lines[1].endswith(f"({LONG})")
    assert lines[2] == "pre-train tiny base ..."
    assert lines[3].startswith("pre-train tiny base: done in ") and "(loss 0.333)" in lines[3]
    assert len(lines) == 4


def test_a_long_cli_line_is_not_wrapped_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    console.print(f"rollback support-triage: version 7  {LONG}")
    assert capsys.readouterr().out.splitlines() == [f"rollback support-triage: version 7  {LONG}"]
