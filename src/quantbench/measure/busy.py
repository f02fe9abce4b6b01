"""How much CPU other processes used while a latency figure was timed (the kernel's counters).

A latency figure is only the model's if the cores it ran on were free. The kernel counts, per
machine, the CPU time spent busy since boot (/proc/stat's first line: user, nice, system, irq,
softirq, steal; idle and iowait are not busy), and per process its own CPU time. Sampled before
and after the timed loop, the machine's busy time minus the measuring process's own (all its
threads) is the CPU that *other* processes used; divided by the wall time of the loop it is in
cores (0..cores). /proc/stat ticks at USER_HZ (100 Hz here): over the >= 1 s timed loop of a
figure that is +-0.02 cores on 2 cores.

A figure is `busy` when others used more than the cores its threads leave free, plus a margin
(`BUSY_MARGIN`): at 2 threads on 2 cores any sustained other process counts; at 1 thread, a
second core's worth of others is tolerated. The margin and the threads-aware rule come from
measurements on this 2-vCPU machine (benchmarks/README.md, "busy.py: the threshold").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quantbench.core.results import LatencyResult

# Cores of other processes' CPU tolerated beyond the cores a figure's threads leave free:
# 10x the counters' resolution (+-0.02 cores over 1 s), a quarter of what one spinning process
# takes. One other process holding a core turned dynamic range's 2-thread figure from 0.64 into
# 10.6 ms (issue 13); two burners beside a 2-thread figure read 1.56-1.91 cores here.
BUSY_MARGIN = 0.25
QUIET_SAMPLE_SECONDS = 1.0  # one look at the machine while waiting for it to become quiet


@dataclass(frozen=True)
class Sample:
    machine_busy_s: float  # busy CPU seconds of the whole machine since boot
    own_s: float  # this process's CPU seconds (every thread)
    wall_s: float  # time.monotonic()


def cores() -> int:
    """The machine's cores as /proc/stat counts them (all online CPUs, not our affinity)."""
    return os.cpu_count() or 1


def _machine_busy_seconds() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    # guest time is already inside user (and guest_nice inside nice): not added again.
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def sample() -> Sample | None:
    """The counters now; None where the kernel does not expose them (not Linux)."""
    busy = _machine_busy_seconds()
    if busy is None:
        return None
    return Sample(busy, time.process_time(), time.monotonic())


def other_cpu(before: Sample | None, after: Sample | None) -> float | None:
    """Cores other processes kept busy between two samples (0..cores), None if unknown."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    others = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return min(max(others / (after.wall_s - before.wall_s), 0.0), float(cores()))


def is_busy(other: float | None, threads: int, n_cores: int | None = None) -> bool:
    """Whether others took CPU a figure at `threads` threads needed (see the module doc)."""
    if other is None:
        return False
    free = max((n_cores or cores()) - threads, 0)
    return other > free + BUSY_MARGIN


def wait_quiet(threads: int, timeout_s: float, interval_s: float = QUIET_SAMPLE_SECONDS,
               sleep=time.sleep) -> tuple[bool, float, float | None]:  # fmt: skip
    """Look at the machine every `interval_s` until others leave `threads` cores free or
    `timeout_s` has passed. Returns (quiet, seconds waited, last other-CPU figure)."""
    started = time.monotonic()
    last: float | None = None
    if timeout_s <= 0:  # the budget is spent: no look, no wait
        return False, 0.0, None
    while True:
        before = sample()
        sleep(interval_s)
        last = other_cpu(before, sample())
        waited = time.monotonic() - started
        if last is None or not is_busy(last, threads):
            return True, waited, last
        if waited >= timeout_s:
            return False, waited, last


def remeasure(figures: list[LatencyResult], measure_again: Callable[[LatencyResult], LatencyResult],
              deadline: float, wait=None) -> tuple[list[LatencyResult], str | None]:  # fmt: skip
    """Each busy figure measured again (`measure_again(figure)`) after waiting, until the
    time.monotonic() `deadline` at most (shared by every figure), for the machine to become
    quiet; the quieter of the two (less CPU used by others) is kept and marked `remeasured`.
    Returns the figures in their order and one line saying what happened (None: none busy)."""
    wait = wait or wait_quiet
    kept, parts, waited_total, all_quiet = [], [], 0.0, True
    for old in figures:
        if not old.busy:
            kept.append(old)
            continue
        quiet, waited, _ = wait(old.threads, deadline - time.monotonic())
        waited_total += waited
        all_quiet &= quiet
        new = measure_again(old)
        better = new if (new.other_cpu or 0.0) < (old.other_cpu or 0.0) else old
        kept.append(better.model_copy(update={"remeasured": True}))
        worse = old if better is new else new
        parts.append(f"{old.threads}t {old.runtime} {better.median_ms:.3g} ms (others "
                     f"{_cores(better.other_cpu)}) over {worse.median_ms:.3g} ms "
                     f"({_cores(worse.other_cpu)})")  # fmt: skip
    if not parts:
        return kept, None
    still = sum(f.busy for f in kept)
    return kept, (f"re-measured {len(parts)} busy figure{'s' * (len(parts) != 1)} after waiting "
                  f"{waited_total:.0f} s{'' if all_quiet else ' (the machine stayed busy)'}, "
                  f"keeping the quieter of each pair: {'; '.join(parts)}"
                  + (f"; {still} still busy" if still else ""))  # fmt: skip


def _cores(value: float | None) -> str:
    return "? cores" if value is None else f"{value:.2f} cores"
