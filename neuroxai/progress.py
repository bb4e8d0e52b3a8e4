"""Progress reporting: the interface the library calls (``Progress.task``/``message``) and the
rich progress bars the CLI layer passes in (:class:`RichProgress`)."""
from __future__ import annotations

import logging

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as _RichProgress, SpinnerColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)

log = logging.getLogger(__name__)


class Progress:
    """No-op progress reporter. ``task(description, total)`` returns an object with ``advance``."""

    def task(self, description: str, total: int | None = None):
        return _NullTask()

    def message(self, text: str) -> None:
        log.info(text)


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class RichProgress(Progress):
    """One rich progress display shared by all stages; every stage gets its own bar with ETA."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self._p = _RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                                TimeRemainingColumn(), console=self.console, disable=quiet,
                                transient=False)

    def __enter__(self):
        self._p.__enter__()
        return self

    def __exit__(self, *exc):
        return self._p.__exit__(*exc)

    def task(self, description: str, total: int | None = None):
        return _Bar(self._p, self._p.add_task(description, total=total))

    def message(self, text: str) -> None:
        logging.getLogger("neuroxai").info(text)
        if not self.quiet:
            self.console.print(text)


class _Bar:
    def __init__(self, p, tid):
        self.p, self.tid = p, tid

    def advance(self, n: int = 1) -> None:
        self.p.advance(self.tid, n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        task = self.p.tasks[[t.id for t in self.p.tasks].index(self.tid)]
        if task.total is not None and not exc[0]:
            self.p.update(self.tid, completed=task.total)
        return False
