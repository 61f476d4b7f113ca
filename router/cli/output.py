"""How listing commands print: a table that never cuts or breaks an id, or JSON.

On a terminal, a rich table whose id columns keep their full width and whose text columns
wrap only between words; when even that cannot fit the terminal, one block per row (field:
value). When stdout is not a terminal (a pipe, a file, a log), plain tab-separated columns
with a header line, so that nothing is wrapped, padded or cut. ``--json`` prints the
answer as one JSON document (:func:`echo_json`) or one object per line (:func:`echo_jsonl`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lora_router.router.cli.common import console as default_console

# a rich table with edges: one space of padding either side of each cell, one rule
# between columns and at both edges
_PAD = 2


@dataclass(frozen=True)
class Col:
    """A column: ``wrap=False`` for ids and other tokens that must stay whole (the column
    is as wide as its longest value); ``wrap=True`` for prose (wrapped between words)."""

    name: str
    wrap: bool = False


@dataclass(frozen=True)
class Listing:
    """What a listing command prints: columns, rows of cell text (a cell may hold several
    lines), an optional title and caption."""

    cols: Sequence[Col]
    rows: Sequence[Sequence[str]]
    title: str | None = None
    caption: str | None = None


def echo_json(data: Any) -> None:
    """One JSON document on stdout (pydantic models and dataclass dicts welcome)."""
    typer.echo(json.dumps(_plain(data), indent=2, default=str))


def echo_jsonl(items: Iterable[Any]) -> None:
    """One JSON object per line on stdout."""
    for item in items:
        typer.echo(json.dumps(_plain(item), default=str))


def _plain(data: Any) -> Any:
    if hasattr(data, "model_dump"):
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [_plain(d) for d in data]
    return data


def print_listing(listing: Listing, out: Console | None = None) -> None:
    """Print ``listing`` the way the output stream calls for (see the module docstring)."""
    con = out or default_console
    if not con.is_terminal:
        _print_tsv(listing, con)
        return
    widths = fit_widths(listing, con.width)
    if widths is None:
        _print_blocks(listing, con)
    else:
        con.print(_table(listing, widths))


def fit_widths(listing: Listing, width: int) -> list[int] | None:
    """Column widths (content only) that fit ``width``, no id narrower than itself and no
    wrapped column narrower than its longest word; ``None`` when there are none."""
    n = len(listing.cols)
    full = [_longest(listing, i, _line_len) for i in range(n)]
    least = [full[i] if not c.wrap else _longest(listing, i, _word_len)
             for i, c in enumerate(listing.cols)]
    room = width - n * (_PAD + 1) - 1
    if sum(least) > room:
        return None
    widths = list(least)
    spare = room - sum(widths)
    want = [f - w for f, w in zip(full, widths, strict=True)]
    while spare > 0 and any(want):  # share what is left among the columns that want more
        open_ = [i for i in range(n) if want[i] > 0]
        share = max(1, spare // len(open_))
        for i in open_:
            give = min(share, want[i], spare)
            widths[i] += give
            want[i] -= give
            spare -= give
            if spare == 0:
                break
    return widths


def _longest(listing: Listing, i: int, measure: Any) -> int:
    cells = [listing.cols[i].name] + [row[i] for row in listing.rows]
    return max((measure(line) for cell in cells for line in cell.splitlines() or [""]),
               default=1) or 1


def _line_len(line: str) -> int:
    return len(line)


def _word_len(line: str) -> int:
    return max((len(w) for w in line.split()), default=0)


def _table(listing: Listing, widths: list[int]) -> Table:
    table = Table(title=listing.title, caption=listing.caption)
    for col, w in zip(listing.cols, widths, strict=True):
        table.add_column(col.name, width=w, no_wrap=not col.wrap, overflow="fold")
    for row in listing.rows:
        table.add_row(*row)
    return table


def _print_blocks(listing: Listing, con: Console) -> None:
    """One block per row, ``field  value`` lines: for terminals too narrow for the table."""
    if listing.title:
        con.print(f"[bold]{listing.title}[/bold]", highlight=False)
    key_width = max(len(c.name) for c in listing.cols)
    for n, row in enumerate(listing.rows):
        if n:
            con.print()
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True, width=key_width)
        grid.add_column(overflow="fold")
        for col, cell in zip(listing.cols, row, strict=True):
            grid.add_row(col.name, cell)
        con.print(grid)
    if listing.caption:
        con.print(listing.caption, highlight=False)


def _print_tsv(listing: Listing, con: Console) -> None:
    """Tab-separated lines: a header, then one line per row; a cell's lines joined by
    ``"; "``; title and caption as ``# `` lines."""
    def clean(cell: str) -> str:
        return "; ".join(part.strip() for part in cell.splitlines() if part.strip()) \
            .replace("\t", " ")

    out = con.file
    if listing.title:
        out.write(f"# {listing.title}\n")
    out.write("\t".join(c.name for c in listing.cols) + "\n")
    for row in listing.rows:
        out.write("\t".join(clean(cell) or "-" for cell in row) + "\n")
    if listing.caption:
        out.write(f"# {listing.caption}\n")
    out.flush()
