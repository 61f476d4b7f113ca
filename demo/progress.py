"""Progress of a demo build: a rich display on stderr, or nothing (library default).

When stderr is not a terminal (a log, CI), one plain line per stage as it starts and as
it ends, with its result and time, so that no label is cut to a terminal's width.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class BuildProgress:
    """Stages with a step count; ``enabled=False`` makes every call a no-op."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._lines: _StageLines | None = None
        if enabled and not Console(stderr=True).is_terminal:
            self._lines = _StageLines()
        elif enabled:
            self._progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BuildProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def stage(self, key: str, description: str, total: int = 1) -> None:
        if self._lines is not None:
            self._lines.start(key, description, total)
        if self._progress is not None:
            self._tasks[key] = self._progress.add_task(description, total=total, info="")

    def update(self, key: str, completed: int, info: str = "") -> None:
        if self._lines is not None:
            self._lines.update(key, completed, info)
        if self._progress is not None and key in self._tasks:
            self._progress.update(self._tasks[key], completed=completed, info=info)

    def done(self, key: str, info: str = "") -> None:
        if self._lines is not None:
            self._lines.finish(key, info)
        if self._progress is not None and key in self._tasks:
            task = self._tasks[key]
            total = self._progress.tasks[task].total or 1
            self._progress.update(task, completed=total, info=info)


class _StageLines:
    """Stage progress as whole lines on stderr (for logs): start, then end with result."""

    def __init__(self) -> None:
        self._stages: dict[str, tuple[str, int, float]] = {}

    def start(self, key: str, description: str, total: int) -> None:
        self._stages[key] = (description, total, time.monotonic())
        self._write(f"{description} ...")

    def update(self, key: str, completed: int, info: str) -> None:
        stage = self._stages.get(key)
        if stage is not None and completed >= stage[1]:
            self.finish(key, info)

    def finish(self, key: str, info: str) -> None:
        stage = self._stages.pop(key, None)
        if stage is not None:
            description, _total, t0 = stage
            self._write(f"{description}: done in {time.monotonic() - t0:.1f} s"
                        + (f" ({info})" if info else ""))

    @staticmethod
    def _write(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
