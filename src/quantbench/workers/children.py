"""Every child process quantbench starts, registered in one place so a signal can stop them all.

Every worker process (workers.Worker: conversion, evaluation, latency) is started through
`popen` here.
On SIGTERM/SIGINT, `interrupt` calls `stop_all()`: every live child is killed at once (a
converter mid-conversion, a worker mid-measurement), and no new one may start while the run
unwinds (a converter thread would otherwise restart its "crashed" worker).

A SIGKILLed parent cannot call anything: its workers set PR_SET_PDEATHSIG (workers.py) and
die with it.
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

_lock = threading.RLock()  # reentrant: the signal handler runs on the thread that may hold it
_live: set[subprocess.Popen] = set()
_stopping = {"on": False}


class Stopping(KeyboardInterrupt):
    """Raised instead of starting a child once `stop_all` has run (the run is being stopped)."""


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen, registered until `release` (or `run`'s end)."""
    with _lock:
        if _stopping["on"]:
            raise Stopping("quantbench is stopping: no new worker processes")
        process = subprocess.Popen(args, **kwargs)
        _live.add(process)
    return process


def release(process: subprocess.Popen) -> None:
    """Forget a child that has exited (or been waited for)."""
    with _lock:
        _live.discard(process)


def run(args: list[str], *, input: str | None = None, timeout: float | None = None,
        **kwargs: Any) -> subprocess.CompletedProcess:  # fmt: skip
    """subprocess.run(capture_output=True, text=True) with the child registered; on a timeout
    or an exception (a signal's) the child is killed before this returns."""
    process = popen(args, stdin=subprocess.PIPE if input is not None else None,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip
    try:
        stdout, stderr = process.communicate(input, timeout=timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        release(process)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def live() -> list[subprocess.Popen]:
    with _lock:
        return [p for p in _live if p.poll() is None]


def stop_all(wait_seconds: float = 5.0) -> int:
    """Kill every live child and refuse new ones until `reset`; returns how many were killed."""
    with _lock:
        _stopping["on"] = True
        processes = list(_live)
    killed = 0
    for process in processes:
        if process.poll() is None:
            try:
                process.kill()
                killed += 1
            except OSError:
                pass
    for process in processes:
        try:
            process.wait(timeout=wait_seconds)
        except subprocess.TimeoutExpired:
            pass
    return killed


def reset() -> None:
    """Allow new children again (the CLI's signal scope ends; tests run several commands)."""
    with _lock:
        _stopping["on"] = False
