"""Test-only worker ops, loaded by a child when QUANTBENCH_WORKER_OPS names this module
(fixture `worker_ops` in conftest.py): replies, errors, crashes, hangs, and versions of the
production ops that crash or hang on chosen names and otherwise do the real work."""

from __future__ import annotations

import os
import signal
import sys
import time

from quantbench.core.errors import ConfigError, QuantbenchError


def echo(payload: dict) -> dict:
    # Chatter on fds 1 and 2, as native libraries do: it must not reach the replies.
    print("chatter on stdout", flush=True)
    os.write(1, b"raw chatter on fd 1\n")
    print("chatter on stderr", file=sys.stderr, flush=True)
    return {"echo": payload, "pid": os.getpid()}


def fail(payload: dict) -> dict:
    if payload.get("kind") == "config":
        raise ConfigError("bad value", tip="fix it")
    if payload.get("kind") == "local":

        class OnlyInTheChild(QuantbenchError):
            pass

        raise OnlyInTheChild("a local error", tip="local tip")
    return {}[payload["missing"]]  # a bug: KeyError


def crash(payload: dict) -> dict:
    print("the last words before the crash", file=sys.stderr, flush=True)
    if payload.get("how") == "abort":
        os.abort()
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)
    return {}


def sleep(payload: dict) -> dict:
    time.sleep(payload.get("seconds", 60))
    return {"slept": True}


def _fault(model: str) -> None:
    """Segfault on a model named crash.* (or ending in $CRASH_ON), hang on hang.*."""
    if model.endswith(os.environ.get("CRASH_ON", "crash.tflite")):
        os.kill(os.getpid(), signal.SIGSEGV)
    if model.endswith("hang.tflite"):
        time.sleep(60)


def faulty_predict(payload: dict) -> dict:
    from quantbench.measure import evaluate

    _fault(payload["model"])
    return evaluate.predict_request(payload)


def faulty_convert(payload: dict) -> dict:
    """The real converter, except: scheme "crash" segfaults, "hang" hangs, "slow" takes 1.5 s,
    and a SavedModel
    named "fake" is converted without TensorFlow (the scheme's name as the file's bytes)."""
    name = payload["spec"]["name"]
    if name == "crash":
        print("converter: about to crash", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if name == "hang":
        time.sleep(60)
    if name == "slow":  # a conversion that takes its time, then succeeds
        time.sleep(1.5)
    if payload["saved_model"] != "fake":
        from quantbench.techniques import convert

        return convert.convert_request(payload)
    with open(payload["out"], "wb") as f:
        f.write(name.encode())
    return {"seconds": 0.5, "error": None, "pid": os.getpid()}


OPS = {
    "echo": "tests.worker_ops:echo",
    "fail": "tests.worker_ops:fail",
    "crash": "tests.worker_ops:crash",
    "sleep": "tests.worker_ops:sleep",
    "predict": "tests.worker_ops:faulty_predict",
    "convert": "tests.worker_ops:faulty_convert",
}
