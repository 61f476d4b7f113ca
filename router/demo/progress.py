"""Progress of a demo build: a rich display on stderr, or nothing (library default)."""

from __future__ import annotations

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
        if enabled:
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
        if self._progress is not None:
            self._tasks[key] = self._progress.add_task(description, total=total, info="")

    def update(self, key: str, completed: int, info: str = "") -> None:
        if self._progress is not None and key in self._tasks:
            self._progress.update(self._tasks[key], completed=completed, info=info)

    def done(self, key: str, info: str = "") -> None:
        if self._progress is not None and key in self._tasks:
            task = self._tasks[key]
            total = self._progress.tasks[task].total or 1
            self._progress.update(task, completed=total, info=info)
