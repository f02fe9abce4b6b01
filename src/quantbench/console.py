"""Terminal output: one rich Console on stderr for progress and logs, tables on stdout.

Progress bars show only when stderr is a terminal, so logs and CI output stay clean.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

# Not a terminal (CI logs, pipes): rich would assume 80 columns and fold the tables.
out = Console(width=None if sys.stdout.isatty() else 160)  # results: tables, paths
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # progress, steps, warnings


def step(message: str) -> None:
    err.print(f"[bold cyan]>[/] {message}", highlight=False)


def info(message: str) -> None:
    err.print(f"  {message}", highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]WARNING[/] {message}", highlight=False)


def interactive() -> bool:
    return err.is_terminal and sys.stderr.isatty()


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[callable]:
    """Yield an `advance(n=1)` function; draws a bar only on a terminal."""
    if not interactive():
        yield lambda n=1: None
        return
    columns = [
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    items = list(items) if total is None else items
    with progress(description, total if total is not None else len(items)) as advance:
        for item in items:
            yield item
            advance()
