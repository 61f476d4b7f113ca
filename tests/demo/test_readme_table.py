"""The README's demo table is what a fresh build reports (issue 11: no hand-typed figures)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from registry.home import Home
from registry.store import RegistryStore
from router.demo import build as B

README = Path(__file__).resolve().parents[2] / "README.md"


def _demo_section() -> list[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("### The demo home")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return lines[start:end]


def _built_with(home: Home) -> dict[str, str]:
    store = RegistryStore(home)
    run = store.get_run_manifest(store.get_model_card(B.V1).run_manifest)
    return run.libraries


def test_readme_demo_table_is_the_builds_report(demo_home: Home) -> None:
    section = _demo_section()
    text = "\n".join(section)
    cited = re.search(r"built with torch (\S+), transformers (\S+) and peft (\S+?)[;,)]", text)
    assert cited, "the README names the library versions its table was built with"
    libs = _built_with(demo_home)
    used = (libs.get("torch"), libs.get("transformers"), libs.get("peft"))
    if used != cited.groups():
        pytest.skip(f"this build used torch/transformers/peft {used}; the README's table is "
                    f"for {cited.groups()} (other versions train slightly different adapters)")
    report = B.load_report(demo_home)
    expected = B.summary_lines(report)
    table = [line for line in section if line.startswith("|")]
    assert table == expected[:-1], (
        "README's demo table differs from the build's report; paste the lines "
        "`lora-router demo build` prints:\n" + "\n".join(expected))
    assert f"held-out test set, {report.test_rows} tickets" in text
    # the build-time line is the one the build prints (its stages as the report names them)
    [build_line] = [line for line in section if line.startswith("Build time: ")]
    stages = re.findall(r"([\w@ -]+?) \d+ s", build_line.split("(", 1)[1].split(")", 1)[0])
    assert [s.strip(", ") for s in stages] == list(report.timings)


def test_build_prints_the_readme_lines(demo_home: Home) -> None:
    report = B.load_report(demo_home)
    lines = B.summary_lines(report)
    assert lines[0] == "| model | overall | slice_en | slice_es |"
    assert any(f"`{B.V2}`" in line and f"{report.adapters[B.V2].slice_es:.3f}" in line
               for line in lines)
    assert lines[-1].startswith(f"Build time: {report.build_seconds:.0f} s (data ")
    # the manifests record the versions the README's caption cites
    assert _built_with(demo_home)["torch"] == metadata.version("torch")
