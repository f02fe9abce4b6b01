"""Where a sweep's trials run: this process, a local process pool, or Ray tasks.

An engine has `name`, `slots` (trials it runs at once), `submit(trial, emit) -> handle`,
`wait(handles) -> (handle, outcome)` and `close()`. Every engine runs a trial through
`execute_trial`, which calls the same orchestrator as `quantbench run` (runner.run, or
quantize.run_quantize) with a `Resources` naming the trial's cores, its node, and a latency
slot: a per-node lock held while latency is measured, so two trials never time models on one
node at the same time (their figures would be each other's noise). Locally the lock is a
multiprocessing lock; on Ray it is a named actor pinned to each node (Ray's resources are held
for a whole task, not for one stage of it, so a custom resource would serialize entire trials).
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from quantbench.engine.context import Emit, Resources, silent

LOCK_NAMESPACE = "quantbench-sweep"
DEFAULT_CPUS_PER_TRIAL = 4  # a trial converts and times in parallel; beyond ~4 cores it gains little


def execute_trial(job: dict[str, Any], node: str, slot: Any = None, emit: Emit = silent) -> dict[str, Any]:
    """Run one trial (resuming its half-done run directory if a killed sweep left one) and
    return its outcome: status, run_dir, error, node, seconds, latency_intervals."""
    from quantbench.core.config import RunConfig
    from quantbench.core.errors import QuantbenchError
    from quantbench.commands.sweep import finished_run

    intervals: list[tuple[str, float, float]] = []

    @contextmanager
    def timed():
        with slot() if slot is not None else _nothing():
            start = time.time()
            try:
                yield
            finally:
                intervals.append((node, start, time.time()))

    cores = int(job.get("cpus") or 1)
    resources = Resources(cores=cores, convert_workers=cores, node=node, latency_slot=timed)
    started = time.perf_counter()
    previous = os.environ.get("QUANTBENCH_CACHE")
    if job.get("cache"):
        os.environ["QUANTBENCH_CACHE"] = job["cache"]  # the sweep's store, shared by its trials
    outcome: dict[str, Any] = {"node": node, "latency_intervals": intervals}
    try:
        cfg = RunConfig.model_validate(job["config"])
        _, resume = finished_run(Path(cfg.output_dir))
        if job["command"] == "quantize":
            from quantbench.commands.quantize import run_quantize

            _, run_dir = run_quantize(cfg, size_given=bool(job.get("size_given")), resume_dir=resume,
                                      resources=resources, emit=emit)  # fmt: skip
        else:
            from quantbench.commands import run as runner

            _, run_dir = runner.run(cfg, resume_dir=resume, resources=resources, emit=emit)
        outcome.update(status="complete", run_dir=str(run_dir))
    except QuantbenchError as e:
        outcome.update(status="failed", error=e.message)
    except Exception as e:  # noqa: BLE001 - a failed trial is recorded; the sweep goes on
        outcome.update(status="failed", error=f"{type(e).__name__}: {e}")
    finally:
        if job.get("cache"):
            if previous is None:
                os.environ.pop("QUANTBENCH_CACHE", None)
            else:
                os.environ["QUANTBENCH_CACHE"] = previous
    outcome["seconds"] = time.perf_counter() - started
    return outcome


@contextmanager
def _nothing():
    yield


def _job(trial: Any, command: str, cache: str | None, cpus: int) -> dict[str, Any]:
    return {"config": trial.config, "command": command, "cache": cache, "cpus": cpus,
            "size_given": trial.size_given}  # fmt: skip


class LocalEngine:
    """Trials on this machine: one after another in this process (their events shown), or
    with `parallel` > 1 in a pool of processes sharing one latency lock."""

    name = "local"

    def __init__(self, command: str = "run", cache: str | None = None, parallel: int | None = None,
                 cpus_per_trial: int | None = None):  # fmt: skip
        cores = Resources.detect().cores
        self.cpus = max(1, min(cpus_per_trial or DEFAULT_CPUS_PER_TRIAL, cores))
        self.slots = max(1, parallel if parallel else cores // self.cpus)
        self.command, self.cache = command, cache
        self.node = socket.gethostname()
        self._pool: ProcessPoolExecutor | None = None
        self._manager = None
        self._lock = None

    def submit(self, trial: Any, emit: Emit) -> Future:
        job = _job(trial, self.command, self.cache, self.cpus)
        if self.slots == 1:  # in this process: the trial's own events reach the CLI
            future: Future = Future()
            label = trial.label

            def tagged(level: str, text: str) -> None:
                emit(level, f"[{label}] {text}")

            future.set_result(execute_trial(job, self.node, None, tagged))
            return future
        if self._pool is None:
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
            self._manager = context.Manager()
            self._lock = self._manager.Lock()
            self._pool = ProcessPoolExecutor(self.slots, mp_context=context)
        return self._pool.submit(_pool_trial, job, self.node, self._lock)

    def wait(self, handles: list[Future]) -> tuple[Future, dict[str, Any]]:
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        handle = next(iter(done))
        return handle, handle.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None


def _pool_trial(job: dict[str, Any], node: str, lock: Any) -> dict[str, Any]:
    return execute_trial(job, node, lambda: lock)


# --- Ray ----------------------------------------------------------------------------------


def _ray():
    try:
        import ray
    except ImportError:
        from quantbench.core.errors import ConfigError

        raise ConfigError("--engine ray needs Ray, which is not installed",
                          tip="pip install 'quantbench[ray]'") from None  # fmt: skip
    return ray


# How a Ray started here (no --address) runs its workers; read by its processes at start.
LOCAL_RAY_ENV = {
    # Ray renices its workers to 15, so on a machine with other work a trial's training and,
    # worse, its timed invokes yield to everything else: on this 2-core machine under a load
    # of 40, three niced trials got 11 s of CPU in 7 minutes. Latency measured at nice 15 is
    # the machine's idle time, not the model's.
    "RAY_worker_niceness": "0",
    # Ray's memory monitor kills its newest workers when the whole machine passes 95% memory,
    # whoever uses it: on this shared machine it killed two trials because of other users'
    # processes. A machine of one's own has the kernel's OOM killer for real exhaustion.
    "RAY_memory_monitor_refresh_ms": "0",
}


@contextmanager
def worker_priority():
    """Start a local Ray with LOCAL_RAY_ENV (this process's environment restored after)."""
    previous = {key: os.environ.get(key) for key in LOCAL_RAY_ENV}
    os.environ.update(LOCAL_RAY_ENV)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _lock_name(node_id: str) -> str:
    return f"quantbench-latency-{node_id}"


LOCK_POLL_SECONDS = 0.2


def _lock_actor(ray: Any):
    """One lock per node, as a named actor pinned to that node. It is held by a process id,
    and a holder that died (a trial killed mid-measurement, its worker lost) no longer
    holds it: the actor runs on the holder's node, so it can see whether that process lives;
    an asyncio.Lock would stay locked forever and every later trial there would hang."""
    import asyncio

    from quantbench.workers import alive

    @ray.remote(num_cpus=0)
    class NodeLatencyLock:
        def __init__(self) -> None:
            self._holder: int | None = None

        async def acquire(self, pid: int) -> bool:
            # Check and set with no await between them: atomic on the actor's event loop.
            while self._holder is not None and self._holder != pid and alive(self._holder):
                await asyncio.sleep(LOCK_POLL_SECONDS)
            self._holder = pid
            return True

        async def release(self, pid: int) -> None:
            if self._holder == pid:
                self._holder = None

        async def holder(self) -> int | None:
            return self._holder

    return NodeLatencyLock


def _node_lock(ray: Any, node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return _lock_actor(ray).options(
        name=_lock_name(node_id), namespace=LOCK_NAMESPACE, get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote()  # fmt: skip


def _ray_trial(job: dict[str, Any]) -> dict[str, Any]:
    """A trial as a Ray task: the lock of the node it landed on guards its latency stage."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    try:
        lock = ray.get_actor(_lock_name(node_id), namespace=LOCK_NAMESPACE)
    except ValueError:  # a node that joined after the sweep started
        lock = _node_lock(ray, node_id)

    @contextmanager
    def slot():
        ray.get(lock.acquire.remote(os.getpid()))
        try:
            yield
        finally:
            ray.get(lock.release.remote(os.getpid()))

    return execute_trial(job, f"{socket.gethostname()}/{node_id[:8]}", slot)


class RayEngine:
    """Trials as Ray tasks declaring `cpus_per_trial` CPUs; Ray places and queues them. With no
    address Ray starts on this machine; with one it joins that cluster (the sweep directory
    and the cache must then be on storage every node sees)."""

    name = "ray"

    def __init__(self, command: str = "run", cache: str | None = None, address: str | None = None,
                 cpus_per_trial: int = 1, num_cpus: int | None = None):  # fmt: skip
        ray = _ray()
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs: dict[str, Any] = {"namespace": LOCK_NAMESPACE, "log_to_driver": False,
                                      "include_dashboard": False}  # fmt: skip
            # "local": a new Ray here, never a cluster a stale /tmp/ray address file names.
            kwargs["address"] = address or "local"
            if not address and num_cpus:
                kwargs["num_cpus"] = num_cpus
            with worker_priority():
                ray.init(**kwargs)
        self.command, self.cache, self.cpus = command, cache, cpus_per_trial
        # Locks are created (and owned) by the driver, one per live node, before any trial.
        self.locks = [_node_lock(ray, n["NodeID"]) for n in ray.nodes() if n.get("Alive")]
        ray.get([lock.holder.remote() for lock in self.locks])  # wait until they exist
        total = int(ray.cluster_resources().get("CPU", 1))
        self.slots = max(1, total // max(1, cpus_per_trial))
        self._task = ray.remote(_ray_trial).options(num_cpus=cpus_per_trial, max_retries=0)

    def submit(self, trial: Any, emit: Emit) -> Any:
        return self._task.remote(_job(trial, self.command, self.cache, self.cpus))

    def wait(self, handles: list[Any]) -> tuple[Any, dict[str, Any]]:
        done, _ = self.ray.wait(handles, num_returns=1)
        handle = done[0]
        try:
            return handle, self.ray.get(handle)
        except Exception as e:  # noqa: BLE001 - the worker died (OOM, node lost): a failed trial
            return handle, {"status": "failed", "error": f"Ray task failed: {type(e).__name__}: {e}"}

    def close(self) -> None:
        for lock in self.locks:
            self.ray.kill(lock)
        self.locks = []
        if self.started_here:
            self.ray.shutdown()
