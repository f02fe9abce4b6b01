"""SIGTERM, SIGHUP and SIGINT as an exception the run finalizes.

SIGTERM is what `timeout`, `kill`, `docker stop` and CI cancellation send. Python's default
action for it ends the process on the spot: results.json said `running`, no report was
written, and the worker processes outlived the main one. Within `signals_raise()` (the CLI's
`main` enters it) each of these signals kills every registered child process
(`children.stop_all`) and raises `Terminated` in the main thread; it unwinds through the
run's `except BaseException` (commands/run.py: orchestrate), which records status `interrupted`, keeps every
finished row and rebuilds the report, and through every `TemporaryDirectory`, which removes
the scaled images the workers read. `Terminated` is a KeyboardInterrupt, so no
`except Exception` on the way swallows it. A second signal while the run finishes is ignored:
the finishing is short (writing results.json and report.html), and SIGKILL still works.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from quantbench.workers import children

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_state: dict = {"signal": None}  # the stop signal received within `signals_raise`, if any


class Terminated(KeyboardInterrupt):
    """The process received a signal that asks it to stop."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT


def received() -> int | None:
    """The stop signal received, if any. The exception it raised can arrive changed: a C
    extension being imported at that moment reports it as `ImportError: initialization
    failed` (measured: SIGTERM while LiteRT's module loaded). Callers that choose a status or
    an exit code ask here, not only `isinstance(e, KeyboardInterrupt)`."""
    return _state["signal"]


def _handler(signum: int, frame) -> None:
    if _state["signal"] is not None:
        return
    _state["signal"] = signum
    children.stop_all()
    raise Terminated(signum)


@contextlib.contextmanager
def signals_raise(signums: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """Install the handler for `signums` (where not ignored, e.g. SIGHUP under nohup), and
    restore the previous handlers afterwards."""
    previous = {}
    for signum in signums:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        previous[signum] = current
        signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state["signal"] = None
        children.reset()
