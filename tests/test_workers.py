"""The worker layer: replies, errors, crashes, hangs, fresh processes, scratch folders, orphans."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantbench import workers
from quantbench.core.errors import ConfigError
from quantbench.workers import Worker, WorkerError

# Timing and process tests: they run alone (the serial lane of `make test`), never beside
# another test process that would take the cores they time or wait on.
pytestmark = pytest.mark.serial


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether the process has exited (or is a zombie nobody reaped) within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_a_reply_comes_back_through_the_chatter(worker_ops):
    with Worker() as worker:
        reply = worker.request("echo", {"x": [1, "two"]}, timeout=60)
        assert reply["echo"] == {"x": [1, "two"]}
        assert worker.request("echo", {}, timeout=60)["pid"] == reply["pid"] == worker.pid
        log = worker.log_path.read_text()
    for chatter in ("chatter on stdout", "raw chatter on fd 1", "chatter on stderr"):
        assert chatter in log


def test_handler_errors_come_back_as_their_class_and_the_worker_goes_on(worker_ops):
    with Worker() as worker:
        with pytest.raises(ConfigError, match="bad value") as info:
            worker.request("fail", {"kind": "config"}, timeout=60)
        assert info.value.tip == "fix it"
        pid = worker.pid
        with pytest.raises(WorkerError, match="a local error"):  # not a class the parent knows
            worker.request("fail", {"kind": "local"}, timeout=60)
        with pytest.raises(WorkerError, match="fail failed: KeyError"):  # a bug in a handler
            worker.request("fail", {"missing": "key"}, timeout=60)
        with pytest.raises(WorkerError, match="unknown worker op 'nope'"):
            worker.request("nope", {}, timeout=60)
        assert worker.request("echo", {}, timeout=60)["pid"] == pid  # the same child throughout


@pytest.mark.parametrize(("how", "signal_name"), [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
def test_a_crash_names_the_signal_and_the_next_request_gets_a_new_child(worker_ops, how,
                                                                        signal_name):  # fmt: skip
    with Worker("test") as worker:
        first = worker.request("echo", {}, timeout=60)["pid"]
        expected = rf"\(killed by {signal_name}\): the last words before the crash"
        with pytest.raises(WorkerError, match=expected) as info:
            worker.request("crash", {"how": how}, timeout=60)
        assert info.value.reason == f"killed by {signal_name}"
        assert _gone(first)
        assert worker.request("echo", {}, timeout=60)["pid"] != first


def test_a_hang_is_killed_after_the_timeout(worker_ops):
    with Worker() as worker:
        hung = worker.request("echo", {}, timeout=60)["pid"]
        with pytest.raises(WorkerError, match=r"no answer in 2 s"):
            worker.request("sleep", {"seconds": 60}, timeout=2)
        assert _gone(hung)
        assert worker.request("sleep", {"seconds": 0}, timeout=60) == {"slept": True}


def test_run_once_uses_a_new_process_each_time(worker_ops):
    pids = {workers.run_once("echo", {}, timeout=60)["pid"] for _ in range(2)}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(_gone(pid) for pid in pids)


def test_close_and_close_all_leave_no_child(worker_ops):
    worker = Worker()
    pid = worker.request("echo", {}, timeout=60)["pid"]
    scratch = worker.log_path.parent
    worker.close()
    assert _gone(pid) and not scratch.exists()
    others = [Worker(), Worker()]
    pids = [w.request("echo", {}, timeout=60)["pid"] for w in others]
    workers.close_all()
    assert all(_gone(pid) for pid in pids)
    for w in others:
        w.close()


@pytest.mark.subprocess
def test_scratch_sweep_removes_dead_pids_folders_only(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f"quantbench-{dead.pid}-eval-abc"
        live = tmp_path / f"quantbench-{alive.pid}-eval-def"
        foreign = tmp_path / f"quantbench-eval-{dead.pid}"  # not our pattern
        file = tmp_path / f"quantbench-{dead.pid}-file"  # not a folder
        for folder in (stale, live, foreign):
            (folder / "sub").mkdir(parents=True)
        file.write_text("x")
        assert workers.sweep_scratch(tmp_path) == [stale]
        assert not stale.exists() and live.exists() and foreign.exists() and file.exists()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.subprocess
def test_scratch_dir_is_named_after_its_pid_and_sweeps(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(workers.tempfile, "tempdir", None)  # re-read TMPDIR
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"quantbench-{dead.pid}-latency-x").mkdir()
    with workers.scratch_dir("latency") as folder:
        assert Path(folder).parent == tmp_path
        assert Path(folder).name.startswith(f"quantbench-{os.getpid()}-latency-")
        assert [p.name for p in tmp_path.iterdir()] == [Path(folder).name]
    assert not Path(folder).exists()


HELPER = """
from quantbench.workers import Worker

worker = Worker()
print(worker.request("echo", {}, timeout=60)["pid"], flush=True)
worker.request("sleep", {"seconds": 60}, timeout=120)  # busy: an end of input would go unread
"""


@pytest.mark.subprocess
def test_no_orphan_when_the_parent_is_killed(worker_ops):
    helper = subprocess.Popen([sys.executable, "-c", HELPER], stdout=subprocess.PIPE, text=True)
    try:
        child = int(helper.stdout.readline())
        assert not _gone(child, within=0.2)
    finally:
        helper.kill()
        helper.wait()
    assert _gone(child)


def test_converter_pool_keeps_its_workers_across_batches_and_replaces_a_crashed_one(worker_ops):
    """A search converts round after round on the same workers (TensorFlow imported and the
    calibration memoized once each); a worker that crashes fails its request, and the next
    request on that thread gets a new child."""
    from quantbench.techniques.converter import ConverterPool

    def pids(pool, n: int) -> set[int]:
        futures = [pool.submit("echo", {"n": i}, 30) for i in range(n)]  # in flight at once
        return {f.result()["pid"] for f in futures}

    with ConverterPool(2) as pool:
        kept = pids(pool, 4) | pids(pool, 4)
        assert 1 <= len(kept) <= 2  # two batches, no new processes: at most the pool's two
        with pytest.raises(WorkerError, match="SIGSEGV"):
            pool.submit("crash", {}, 30).result()
        after = pids(pool, 4)
        assert len(after) <= 2 and len(kept | after) <= 3  # at most the crashed one replaced


def test_closing_a_converter_pool_cancels_what_no_worker_started(worker_ops):
    """Leaving a search early (an error, a stop signal) must not wait for its queued jobs."""
    from quantbench.techniques.converter import ConverterPool

    pool = ConverterPool(1)
    running = pool.submit("sleep", {"seconds": 0.5}, 30)
    for _ in range(3000):  # until the worker has taken it (its process starting, then asleep)
        if running.running():
            break
        time.sleep(0.01)
    queued = [pool.submit("sleep", {"seconds": 60}, 90) for _ in range(10)]
    pool.close()
    assert running.done() and not running.cancelled() and running.result() == {"slept": True}
    assert all(f.cancelled() for f in queued)  # else close() would have slept 10 minutes
