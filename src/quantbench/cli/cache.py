"""`quantbench cache list|clear`: the model cache (store.py)."""

from __future__ import annotations

import sys

import click

from quantbench.cli.app import (  # the group and the options the commands share
    cli,
)


# --- cache --------------------------------------------------------------------------------


@cli.group()
def cache() -> None:
    """The model cache: trained models, .tflite files and measurements reused across runs
    ($QUANTBENCH_CACHE, default ~/.cache/quantbench)."""


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _age(when) -> str:
    import time

    seconds = max(0.0, time.time() - when.timestamp())
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.0f} {unit}"
    return "now"


@cache.command("list")
def cache_list() -> None:
    """List cached entries: key, stage, label, size, age and last use."""
    from rich.table import Table
    from rich.text import Text

    from quantbench.present.console import out
    from quantbench.store import Store

    store = Store()
    entries = store.list()
    if not entries:
        out.print(f"the model cache at {store.root} is empty", highlight=False, markup=False)
        return
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("key", "stage", "label", "size", "age", "used"):
        table.add_column(column, justify="right" if column in ("size", "age", "used") else "left")
    for e in entries:
        table.add_row(e.key[:12], e.stage, Text(e.label), _bytes(e.size_bytes), _age(e.created),
                      _age(e.used))  # fmt: skip
    out.print(table)
    total = sum(e.size_bytes for e in entries)
    out.print(f"{_entries(len(entries))}, {_bytes(total)} in {store.root}", highlight=False,
              markup=False)  # fmt: skip


@cache.command("clear")
@click.option("--stage", help="Only entries of this stage (see `quantbench cache list`).")
@click.option("--older-than", type=click.FloatRange(0), metavar="DAYS",
              help="Only entries not used for DAYS days.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(stage: str | None, older_than: float | None, yes: bool) -> None:
    """Remove cached entries (all, or those matching --stage / --older-than).

    Asks first on a terminal; elsewhere it needs --yes, since the cache can hold hours of
    training and a script that forgot --yes should fail loudly rather than do nothing.
    """
    from quantbench.present.console import out
    from quantbench.core.errors import ConfigError
    from quantbench.store import Store
    from quantbench.core.suggest import did_you_mean

    store = Store()
    doomed = store.select(stage, older_than)
    if not doomed:
        stages = sorted({e.stage for e in store.list()})
        message = f"nothing to remove from {store.root}"
        if stage and stage not in stages:
            message += f": no entries of stage {stage!r}{did_you_mean(stage, stages)}"
            message += f"; stages present: {', '.join(stages)}" if stages else ""
        out.print(message, highlight=False, markup=False)
        store.sweep()  # damaged entries and crashed writes are garbage either way
        return
    size = sum(e.size_bytes for e in doomed)
    what = f"{_entries(len(doomed))} ({_bytes(size)}) from {store.root}"
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"would remove {what}; nothing removed",
                              tip="add --yes to remove them")  # fmt: skip
        if not click.confirm(f"remove {what}?", err=True):
            out.print("nothing removed", highlight=False)
            return
    count, size = store.clear(stage, older_than)
    out.print(f"removed {_entries(count)} ({_bytes(size)}) from {store.root}", highlight=False,
              markup=False)  # fmt: skip
