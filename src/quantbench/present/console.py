"""Terminal output: one rich Console on stderr for progress and logs, tables on stdout.

Progress bars show only when stderr is a terminal, so logs and CI output stay clean.

User strings are data, never markup: both consoles have markup off, so a file name, class
folder, run name or path such as `[/x]` prints as itself wherever it is interpolated (with
markup on, rich raised MarkupError on it, sometimes after the run had finished). Styling is
therefore explicit: a `rich.text.Text` with styles, e.g. `styled("failed", "red")`.
"""

from __future__ import annotations

import contextlib
import os
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
from rich.text import Text

T = TypeVar("T")


def _width(stream) -> int | None:
    """None (rich asks the terminal, or reads COLUMNS) on a terminal or when COLUMNS is set;
    160 otherwise (CI logs, pipes), where rich would assume 80 columns and fold the tables."""
    if stream.isatty() or os.environ.get("COLUMNS", "").strip().isdigit():
        return None
    return 160


out = Console(markup=False, width=_width(sys.stdout))  # tables, paths
err = Console(stderr=True, markup=False, width=_width(sys.stderr))  # progress, steps, warnings


def styled(text: str, style: str) -> Text:
    """`text` in a style, as a table cell or part of a line (never parsed as markup)."""
    return Text(text, style=style)


def line(*parts: str | Text | tuple[str, str]) -> Text:
    """One line from plain strings, Text, or (string, style) pairs; nothing is parsed."""
    return Text.assemble(*parts)


def step(message: str) -> None:
    err.print(line((">", "bold cyan"), " ", message), highlight=False)


def info(message: str) -> None:
    err.print(line("  ", message), highlight=False)


def warn(message: str) -> None:
    # One line however narrow the console (soft wrap: the terminal wraps it, a log keeps it whole).
    err.print(line(("WARNING", "yellow"), " ", message), highlight=False, soft_wrap=True)


def interactive() -> bool:
    return err.is_terminal and sys.stderr.isatty()


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[callable]:
    """Yield an `advance(n=1)` function; draws a bar only on a terminal."""
    if not interactive():
        yield lambda n=1: None
        return
    columns = [
        TextColumn("  {task.description}", markup=False),
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
