"""One worker layer: the child processes that convert, score and time models.

Converters and LiteRT kernels can crash (a segfault in native code), hang, or flood the terminal
with C++ log lines. Every such step therefore runs in a child `python -m quantbench.workers`
that speaks one protocol:

- the parent writes one JSON request per line on the child's stdin: `{"op": NAME, "payload": {}}`;
- the child runs the op's handler (`OPS`: name -> "module:function", imported lazily in the
  child, so a child that only scores never imports TensorFlow) and writes one JSON reply line
  (`{"reply": {...}}`) on a dedicated descriptor (the real stdout, dup'ed); fds 1 and 2 go to
  a log file, so a native library's chatter never corrupts a reply, and the log's last line
  explains a crash;
- a handler returns a JSON-able dict; a `QuantbenchError` it raises comes back as
  `{"error", "tip", "kind"}` and is raised again in the parent, as the same class when the
  parent knows it.

`Worker` (the parent side) starts its child at the first request and keeps it for the next
ones. Every request has a timeout: a crash or a hang (the child is then killed) raises
`WorkerError` with the reason, and the next request starts a fresh child. `run_once` uses a
new process for one request (latency: init time and peak memory are then the model's own).

Children never outlive the parent: each asks the kernel for SIGKILL when its parent dies
(PR_SET_PDEATHSIG, Linux), `close()` kills a child that does not exit, and `close_all()` kills
every live one (for the CLI's SIGTERM handler). Scratch folders are named after the owning pid
(`scratch_dir`), and creating one removes those of processes that no longer exist.

Tests add ops without touching `OPS`: `QUANTBENCH_WORKER_OPS=mod1,mod2` makes the child import
those modules and merge their own `OPS` dicts (which may also replace a production op).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from quantbench.workers import children
from quantbench.core.errors import QuantbenchError, first_line

# The production ops. Adding one is one entry: its handler takes the payload dict and returns
# a JSON-able dict.
OPS: dict[str, str] = {
    "convert": "quantbench.techniques.convert:convert_request",
    "warm": "quantbench.techniques.convert:warm_request",  # import TensorFlow ahead of the first convert
    "predict": "quantbench.measure.evaluate:predict_request",
    "latency": "quantbench.measure.latency:measure_request",
    "tflm": "quantbench.targets.mcu:tflm_request",  # TF Lite Micro (targets/)
    "gpu": "quantbench.targets.gpu:gpu_request",  # LiteRT's model analyzer (targets/)
    "analyze": "quantbench.techniques.convert:analyze_request",
    "aeq": "quantbench.techniques.aeq:aeq_request",  # AI Edge Quantizer on a float .tflite
}
PLUGINS_ENV = "QUANTBENCH_WORKER_OPS"  # extra op modules (tests), read by the child only
PARENT_ENV = "QUANTBENCH_WORKER_PARENT"
CLOSE_SECONDS = 10  # a closed child finishes its exit (TensorFlow's teardown) or is killed
# Log lines that never explain a failure (XNNPACK announces itself for every interpreter;
# CompiledModel's environment lists every accelerator and plugin it tries to load).
_NOISE = re.compile(r"^INFO: Created TensorFlow Lite|^INFO: Initialized TensorFlow Lite|"
                    r"^INFO: \[|^WARNING: \[(npu_registry|compiler_plugin)|^└ Could not load")


class WorkerError(QuantbenchError):
    """A worker process crashed or hung; `reason` says how ("killed by SIGSEGV")."""

    def __init__(self, message: str, tip: str | None = None, reason: str = "", detail: str = ""):
        super().__init__(message, tip)
        self.reason = reason
        self.detail = detail


# --- scratch folders ---------------------------------------------------------------------

_SCRATCH = re.compile(r"^quantbench-(\d+)-")


def alive(pid: int) -> bool:
    """Whether a process with this id exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_scratch(root: str | Path | None = None) -> list[Path]:
    """Remove our scratch folders whose owning process is gone; returns those removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = _SCRATCH.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except (OSError, AttributeError):
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not alive(pid):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder `quantbench-<pid>-<prefix>-XXXX` in TMPDIR (use as a context manager
    or call `cleanup()`). A SIGKILL leaves it behind; the next one created sweeps it."""
    sweep_scratch()
    return tempfile.TemporaryDirectory(prefix=f"quantbench-{os.getpid()}-{prefix}-")


# --- the parent side ---------------------------------------------------------------------

_LIVE: set[Worker] = set()
_LIVE_LOCK = threading.Lock()


def _crash_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _error_class(kind: str | None) -> type[QuantbenchError] | None:
    pending = [QuantbenchError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == kind:
            return cls
        pending.extend(cls.__subclasses__())
    return None


class Worker:
    """A child process serving requests one at a time; see the module docstring.

    The kernel kills the child when the thread that started it exits (PR_SET_PDEATHSIG is
    per thread): the next request then starts a new one. Start and use a worker in one
    long-lived thread.
    """

    # The child's command line; tests may substitute their own.
    command: tuple[str, ...] = (sys.executable, "-m", "quantbench.workers")

    def __init__(self, name: str = "worker"):
        self.name = name
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        if self._scratch is None:
            self._scratch = scratch_dir(self.name)
        return Path(self._scratch.name) / "worker.log"

    def _start(self) -> subprocess.Popen:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds its own copy
        try:
            env = {**os.environ, PARENT_ENV: str(os.getpid())}
            # Through the one registry of children, which a stop signal empties (interrupt.py).
            process = children.popen(list(self.command), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, env=env)  # fmt: skip
        finally:
            log.close()
        with _LIVE_LOCK:
            _LIVE.add(self)
        return process

    def _log_tail(self, offset: int) -> str:
        """The last meaningful line the child logged since `offset`."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _NOISE.match(ln)]
        return lines[-1][:300] if lines else ""

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def request(self, op: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The op's reply; raises WorkerError on a crash or after `timeout` seconds."""
        with self._lock:
            if self._process is not None and self._process.poll() is not None:
                self._discard()  # it died between requests
            if self._process is None:
                self._process = self._start()
            process = self._process
            offset = self._log_size()
            line, hung = b"", False
            try:
                process.stdin.write(json.dumps({"op": op, "payload": payload}).encode() + b"\n")
                process.stdin.flush()
                with selectors.DefaultSelector() as selector:
                    selector.register(process.stdout, selectors.EVENT_READ)
                    hung = not selector.select(timeout)
                    if not hung:
                        line = process.stdout.readline()  # b"" once the child is gone
            except OSError:  # BrokenPipeError: it died before reading the request
                pass
            if not line.endswith(b"\n"):
                process.kill()
                code = process.wait()
                self._discard()
                reason = f"no answer in {timeout:g} s" if hung else _crash_reason(code)
                detail = self._log_tail(offset)
                raise WorkerError(f"{self.name} worker failed on {op} ({reason})"
                                  + (f": {detail}" if detail else ""),
                                  tip="re-run with -v; the other steps are unaffected",
                                  reason=reason, detail=detail)  # fmt: skip
            reply = json.loads(line)
        if "error" in reply:
            cls = _error_class(reply.get("kind")) or WorkerError
            raise cls(reply["error"], reply.get("tip"))
        return reply["reply"]

    def _discard(self) -> None:
        """Forget the (exited) child and close our ends of its pipes."""
        process, self._process = self._process, None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if process is not None:
            children.release(process)
            for pipe in (process.stdin, process.stdout):
                try:
                    pipe.close()
                except OSError:  # BrokenPipeError: unsent bytes of a request it never read
                    pass

    def kill(self) -> None:
        """Kill the child now (no waiting, no cleanup: safe from a signal handler)."""
        process = self._process
        if process is not None:
            try:
                process.kill()  # a no-op once it has been reaped
            except OSError:
                pass

    def close(self) -> None:
        """Let the child exit (it reads end of input), kill it if it does not, remove scratch."""
        with self._lock:
            process = self._process
            if process is not None:
                try:
                    process.stdin.close()
                    process.wait(timeout=CLOSE_SECONDS)
                except (OSError, subprocess.TimeoutExpired):
                    process.kill()
                    process.wait()
                self._discard()
            if self._scratch is not None:
                self._scratch.cleanup()
                self._scratch = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_once(op: str, payload: dict[str, Any], timeout: float,
             name: str = "worker") -> dict[str, Any]:  # fmt: skip
    """One request in a new process, which then exits (nothing loaded by an earlier request)."""
    with Worker(name) as worker:
        return worker.request(op, payload, timeout)


def close_all() -> None:
    """Kill every live worker's child (for a SIGTERM handler: no waiting, no cleanup)."""
    with _LIVE_LOCK:
        workers = list(_LIVE)
    for worker in workers:
        worker.kill()


# --- the child side ----------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits; exit if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):  # the parent died before the prctl
        os._exit(1)


def _handlers() -> dict[str, str]:
    import importlib

    ops = dict(OPS)
    for module in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
        ops.update(importlib.import_module(module.strip()).OPS)
    return ops


def _handle(ops: dict[str, str], cache: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    import importlib

    op = request.get("op")
    if op not in ops:
        return {"error": f"unknown worker op {op!r}", "kind": "WorkerError"}
    if op not in cache:
        module, function = ops[op].split(":")
        cache[op] = getattr(importlib.import_module(module), function)
    try:
        return {"reply": cache[op](request.get("payload") or {})}
    except QuantbenchError as e:
        return {"error": e.message, "tip": e.tip, "kind": type(e).__name__}
    except Exception as e:  # noqa: BLE001 - a bug in a handler: report it, keep serving
        first = first_line(e)
        return {"error": f"{op} failed: {type(e).__name__}: {first}", "kind": "WorkerError"}


def main() -> None:
    """`python -m quantbench.workers`: serve requests until end of input."""
    _die_with_parent()
    # Replies go to the real stdout; anything a native library prints goes to the log instead.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    ops, cache = _handlers(), {}
    for line in sys.stdin:
        if line.strip():
            replies.write(json.dumps(_handle(ops, cache, json.loads(line))) + "\n")

