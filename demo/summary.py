"""The demo's accuracy table as the README shows it, rendered from a build's report.

``lora-router demo build`` prints these lines after every build, and a test compares the
README's table with a fresh build's ``demo-report.json``, so the README cannot drift from
what the build produces.
"""

from __future__ import annotations

from collections.abc import Mapping

# what each demo adapter was trained on, as the README's table names it
ADAPTER_NOTES: Mapping[str, str] = {
    "support-triage@v1": "clean labels",
    "support-triage@v2": "Spanish relabel batch: 3 of 8 categories merged",
}
HEADER = ("| model | overall | slice_en | slice_es |", "|---|---|---|---|")


def table_row(adapter_id: str, accuracy: float, slice_en: float, slice_es: float) -> str:
    """One markdown row: the adapter, what it trained on, three accuracies (3 decimals)."""
    note = ADAPTER_NOTES.get(adapter_id)
    model = f"`{adapter_id}`" + (f" ({note})" if note else "")
    return f"| {model} | {accuracy:.3f} | {slice_en:.3f} | {slice_es:.3f} |"


def readme_table(adapters: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The README's demo table for ``{adapter_id: {accuracy, slice_en, slice_es}}``."""
    rows = [table_row(aid, a["accuracy"], a["slice_en"], a["slice_es"])
            for aid, a in adapters.items()]
    return [*HEADER, *rows]


def build_time_line(build_seconds: float, timings: Mapping[str, float]) -> str:
    """The build time and its stages, one line."""
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    return f"Build time: {build_seconds:.0f} s ({stages})."
