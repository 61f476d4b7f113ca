"""Plain-text help that reads as sentences at any width (``lora-router ... --help``).

Typer's rich help prints a ``<bool>`` type beside every flag and keeps a docstring's line
breaks in the command list; click's plain help cuts each command's summary with "..." at
the terminal's width and breaks words at hyphens (``~/.lora-`` / ``router``). Here: plain
help, each command listed with its first whole sentence, text wrapped only between
words, arguments shown in capitals.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

from typer.core import TyperArgument, TyperGroup

try:  # typer >= 0.2x carries its own copy of click
    from typer import _click
except ImportError:  # pragma: no cover  (older typer: click itself)
    import click as _click  # type: ignore[no-redef]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`$])")
_PARAGRAPHS = re.compile(r"\n\s*\n")


def first_sentence(text: str) -> str:
    """The first sentence of a help text's first paragraph, on one line."""
    paragraph = " ".join(_PARAGRAPHS.split(text.strip())[0].split())
    return _SENTENCE_END.split(paragraph, maxsplit=1)[0]


def wrap(text: str, width: int, indent: str = "", first_indent: str | None = None) -> str:
    """Paragraphs rewrapped to ``width`` between words only (no hyphen or word breaks)."""
    wrapper = textwrap.TextWrapper(
        max(width, 20), subsequent_indent=indent, break_on_hyphens=False,
        break_long_words=False,
    )
    out = []
    for n, paragraph in enumerate(_PARAGRAPHS.split(text.strip())):
        wrapper.initial_indent = first_indent if n == 0 and first_indent is not None else indent
        out.append(wrapper.fill(" ".join(paragraph.split())))
    return "\n\n".join(out)


class SentenceFormatter(_click.HelpFormatter):
    """click's help formatter, wrapping with :func:`wrap`."""

    def write_text(self, text: str) -> None:
        self.write(wrap(text, self.width, " " * self.current_indent) + "\n")

    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30,
                 col_spacing: int = 2) -> None:
        rows = list(rows)
        first_col = min(max((len(r[0]) for r in rows), default=0), col_max) + col_spacing
        pad = " " * self.current_indent
        for first, second in rows:
            head = f"{pad}{first}"
            if not second:
                self.write(head + "\n")
                continue
            hang = " " * (self.current_indent + first_col)
            if len(first) <= first_col - col_spacing:
                self.write(wrap(second, self.width, hang, head.ljust(len(hang))) + "\n")
            else:
                self.write(head + "\n" + wrap(second, self.width, hang) + "\n")


class SentenceContext(_click.Context):
    formatter_class = SentenceFormatter


class SentenceHelpGroup(TyperGroup):
    """The root command group: every command below it gets :class:`SentenceFormatter`,
    a command list of first sentences and arguments in capitals (``ROUTE``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.context_class = SentenceContext
        _tidy(self.commands.values())


def _tidy(commands: Iterable[Any]) -> None:
    for cmd in commands:
        cmd.context_class = SentenceContext
        if cmd.short_help is None and cmd.help:
            cmd.short_help = first_sentence(cmd.help)
        for param in cmd.params:
            if isinstance(param, TyperArgument) and param.metavar is None and param.name:
                param.metavar = param.name.upper()
        if isinstance(cmd, TyperGroup):
            _tidy(cmd.commands.values())
