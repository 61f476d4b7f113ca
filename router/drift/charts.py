"""PNG charts of the drift signals (:mod:`router.drift.signals`) and of an assessment.

matplotlib's object API on an Agg canvas (no pyplot, no global state; imported only when
a chart is drawn). One figure per signal, one panel per slice (or input feature), one line
per adapter version in a fixed colour across panels; alerts (red) and route changes (green)
as vertical lines, gate bars and drift thresholds as dotted lines; one legend per figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lora_router.router.drift.assess import Rate
from lora_router.router.drift.inputs import KS_D_MIN, PSI_ALERT
from lora_router.router.drift.signals import MIN_LABELLED, Signals

DPI = 100


@dataclass(frozen=True, slots=True)
class Marker:
    at: datetime
    label: str
    kind: str  # alert | change


def _naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None)


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panels(n: int, title: str) -> tuple[Any, list[Any]]:
    fig = _figure(12, 2.4 * n + 1.0)
    axes = list(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
    fig.suptitle(title)
    return fig, axes


def _colour(sig: Signals, model: str) -> str:
    return f"C{sig.models.index(model) % 10}"


def _finish(fig: Any, axes: Sequence[Any], sig: Signals, markers: Sequence[Marker],
            path: Path) -> Path:
    from matplotlib import dates as mdates

    lo, hi = sig.buckets.start, sig.buckets.end
    for ax in axes:
        for m in markers:
            if lo <= m.at <= hi:
                ax.axvline(_naive(m.at), color="tab:red" if m.kind == "alert" else "tab:green",
                           linestyle="--", linewidth=1.2, label=m.label)
        ax.set_xlim(_naive(lo), _naive(hi))
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper",
                   fontsize=8)
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(
        mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("time (UTC)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _line(ax: Any, xs: list[datetime], ys: Sequence[float | None], label: str,
          colour: str) -> None:
    if any(y is not None for y in ys):
        ax.plot(xs, [_nan(y) for y in ys], marker="o", markersize=3, label=label, color=colour)


def render_accuracy(sig: Signals, path: Path, markers: Sequence[Marker] = ()) -> Path:
    fig, axes = _panels(len(sig.slices), "accuracy on labelled requests, per adapter and"
                                         " slice (95% Wilson band)")
    xs = [_naive(t) for t in sig.buckets.mids()]
    for ax, s in zip(axes, sig.slices, strict=True):
        for m in sig.models:
            rates = sig.accuracy.get((m, s), [])
            ys = [r.accuracy if r.n >= MIN_LABELLED else None for r in rates]
            if not any(y is not None for y in ys):
                continue
            colour = _colour(sig, m)
            ax.plot(xs, [_nan(y) for y in ys], marker="o", markersize=3, label=m, color=colour)
            band = [r.ci95 if r.n >= MIN_LABELLED else (math.nan, math.nan) for r in rates]
            ax.fill_between(xs, [lo for lo, _ in band], [hi for _, hi in band], color=colour,
                            alpha=0.15)
        if (bar := sig.bars.get(s)) is not None:
            ax.axhline(bar, color="black", linestyle=":", linewidth=1,
                       label=f"gate bar of {sig.gate_model}")
            ax.annotate(f"{bar:.2f}", (1.0, bar), xycoords=("axes fraction", "data"),
                        fontsize=7, ha="right", va="bottom")
        ax.set_ylim(-0.02, 1.05)
        ax.set_ylabel(s)
    return _finish(fig, axes, sig, markers, path)


def render_output_drift(sig: Signals, path: Path, markers: Sequence[Marker] = ()) -> Path:
    fig, axes = _panels(len(sig.slices), "output drift: PSI of the predicted-label"
                                         " distribution, per adapter and slice")
    xs = [_naive(t) for t in sig.buckets.mids()]
    for ax, s in zip(axes, sig.slices, strict=True):
        for m in sig.models:
            _line(ax, xs, sig.output_psi.get((m, s), []), f"{m} (vs {sig.reference[m]})",
                  _colour(sig, m))
        ax.axhline(PSI_ALERT, color="grey", linestyle=":", linewidth=1,
                   label=f"PSI {PSI_ALERT} (major shift)")
        ax.set_ylabel(f"{s}: PSI")
    return _finish(fig, axes, sig, markers, path)


def render_input_drift(sig: Signals, path: Path, markers: Sequence[Marker] = ()) -> Path:
    names = sorted({f for f, _ in sig.input_drift}) or ["(no input features)"]
    fig, axes = _panels(len(names), "input drift per adapter, against its reference")
    xs = [_naive(t) for t in sig.buckets.mids()]
    for ax, name in zip(axes, names, strict=True):
        for m in sig.models:
            _line(ax, xs, sig.input_drift.get((name, m), []), f"{m} (vs {sig.reference[m]})",
                  _colour(sig, m))
        psi = "PSI" in name
        ax.axhline(PSI_ALERT if psi else KS_D_MIN, color="grey", linestyle=":", linewidth=1,
                   label=f"PSI {PSI_ALERT} (major shift)" if psi else f"KS D {KS_D_MIN}")
        ax.set_ylabel(name)
    return _finish(fig, axes, sig, markers, path)


def render_groups(title: str, rows: Sequence[tuple[str, Rate, Rate | None]],
                  names: tuple[str, str | None], path: Path,
                  highlight: str | None = None) -> Path:
    """Horizontal bars: accuracy per group for the adapter and its comparison, with CIs;
    ``highlight``: the failing group's label, in bold."""
    fig = _figure(10, 0.45 * len(rows) + 1.8)
    ax = fig.subplots()
    ys = list(range(len(rows)))
    sides = ((names[0], [r[1] for r in rows]), (names[1], [r[2] or Rate() for r in rows]))
    for offset, (label, rates) in enumerate(sides):
        if label is None:
            continue
        acc = [_nan(r.accuracy) for r in rates]
        lows = [max(a - r.ci95[0], 0.0) if r.n else 0.0 for a, r in zip(acc, rates, strict=True)]
        highs = [max(r.ci95[1] - a, 0.0) if r.n else 0.0
                 for a, r in zip(acc, rates, strict=True)]
        ax.barh([y + 0.38 * offset for y in ys], acc, height=0.38, xerr=[lows, highs],
                label=label, capsize=2, color=f"C{offset}")
    ax.set_yticks([y + 0.19 for y in ys], [r[0] for r in rows], fontsize=8)
    for tick in ax.get_yticklabels():
        if tick.get_text() == highlight:
            tick.set_fontweight("bold")
            tick.set_color("tab:red")
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("accuracy on labelled requests (95% Wilson interval)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def render_all(sig: Signals, out: Path, markers: Sequence[Marker] = ()) -> list[Path]:
    """The three signal charts, as ``accuracy.png``, ``output_drift.png``,
    ``input_drift.png`` under ``out``."""
    return [render_accuracy(sig, out / "accuracy.png", markers),
            render_output_drift(sig, out / "output_drift.png", markers),
            render_input_drift(sig, out / "input_drift.png", markers)]
