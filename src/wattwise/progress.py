"""Progress display (rich), silenced for --json output and non-interactive runs when asked."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Progress and human output go to stderr so stdout stays clean for --json.
# markup=False on both: what we print quotes layer names, paths, errors and generated text,
# and rich would read their brackets as markup and drop them ("ignore: [enc.layers.0...]",
# "list[int]"). Styling is done with `style=` / `rich.text.Text` instead.
console = Console(stderr=True, markup=False)
# Results a person reads (tables, headlines) go to stdout.
# Piped output gets 120 columns instead of rich's 80 so tables stay on one line per row.
result_console = Console(width=None if sys.stdout.isatty() else 120, markup=False)


def progress_enabled() -> bool:
    """False when WATTWISE_QUIET=1 (set by --json)."""
    return os.environ.get("WATTWISE_QUIET", "") != "1"


class _Bar:
    def __init__(self, progress: Progress | None, task_id) -> None:
        self._progress, self._task_id = progress, task_id

    def advance(self, status: str = "", amount: int = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, advance=amount, status=status)

    def update(self, status: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, status=status)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[_Bar]:
    """A rich progress bar with a status text; a no-op when disabled or quiet."""
    if not (enabled and progress_enabled()):
        yield _Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}", markup=False),  # statuses quote user text
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task_id = progress.add_task(description, total=total, status="")
        yield _Bar(progress, task_id)


def info(message: str, style: str | None = None) -> None:
    """A status line on stderr unless quiet, as plain text (no markup), in `style` if given."""
    if progress_enabled():
        console.print(message, style=style, highlight=False)
