"""A run stopped by a signal says so, keeps what it measured, and leaves nothing behind.

SIGTERM (what `timeout`, `kill`, `docker stop` and CI cancellation send) and SIGINT at several
points of a small `quantize` run: results.json parses and says `interrupted`, the finished rows
are kept, report.html exists, no process of the run survives it (found through an environment
marker that every child inherits) and no `quantbench-*` scratch folder is left in its TMPDIR.
SIGKILL cannot be handled: results.json still parses (atomic writes), and the children end on
their own (the evaluation worker at the end of its input) rather than living on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import make_image_folder

# Timing and process tests: they run alone (the serial lane of `make test`), never beside
# another test process that would take the cores they time or wait on.
pytestmark = pytest.mark.serial

DEADLINE = 300  # seconds a stopped run may take to be gone; a hang fails instead of blocking CI


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.test_quantize import sequential_cnn

    root = tmp_path_factory.mktemp("signals")
    model = root / "tiny.keras"
    sequential_cnn(num_classes=3, size=32).save(model)
    return model, make_image_folder(root / "photos", per_class=8, size=32)


def processes_with(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry))
    return found


def start_run(setup, tmp_path: Path, schemes: str = "float32,int8"):
    model, photos = setup
    marker = f"QB_SIGNAL_TEST={uuid.uuid4().hex}"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "QUANTBENCH_CACHE": str(tmp_path / "cache"),
           marker.split("=")[0]: marker.split("=")[1], "PYTHONUNBUFFERED": "1"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "quantbench", "quantize", str(model), "--data", str(photos),
         "--schemes", schemes, "--threads", "1", "--latency-runs", "200", "--no-cache",
         "--output-dir", str(tmp_path / "runs")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        # As a terminal's Ctrl-C finds it: a background job of a non-interactive shell (`cmd &`,
        # how a CI script may start the suite) ignores SIGINT, and quantbench rightly leaves an
        # ignored signal ignored, so the SIGINT case would measure the launcher, not the run.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    return process, marker, scratch


def wait_for_line(process, fragment: str) -> list[str]:
    lines = []
    for line in process.stderr:
        lines.append(line)
        if fragment in line:
            return lines
    pytest.fail(f"the run ended before printing {fragment!r}:\n{''.join(lines)}")


def gone(marker: str) -> bool:
    deadline = time.monotonic() + DEADLINE
    while processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# (signal, the stderr line after which it is sent, extra delay): the points of a run.
POINTS = {
    "SIGTERM at the run directory": (signal.SIGTERM, "run directory:", 0.0),
    "SIGTERM while converting": (signal.SIGTERM, "converting", 1.0),
    "SIGTERM while evaluating": (signal.SIGTERM, "evaluating float32", 0.0),
    "SIGTERM while timing latency": (signal.SIGTERM, "evaluating float32", 1.5),
    "SIGINT while converting": (signal.SIGINT, "converting", 1.0),
}


@pytest.mark.subprocess
@pytest.mark.parametrize("point", POINTS)
def test_signal_finishes_the_run_and_stops_every_child(point, setup, tmp_path):
    signum, fragment, delay = POINTS[point]
    process, marker, scratch = start_run(setup, tmp_path)
    log = wait_for_line(process, fragment)
    time.sleep(delay)
    process.send_signal(signum)
    rest = process.communicate(timeout=DEADLINE)[1]
    log = "".join(log) + rest
    assert process.returncode == 128 + signum, log
    assert f"ERROR stopped by {signal.Signals(signum).name}" in log and "Traceback" not in log, log
    [run_dir] = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted", log
    assert results["finished"] is not None
    assert (run_dir / "report.html").is_file()
    for row in results["variants"]:  # every kept row is a finished one
        assert row["status"] in ("ok", "failed", "identical") and (
            row["kind"] == "keras" or row["status"] != "ok" or row["latency"]), row
    assert processes_with(marker) == [], "a process of the run outlived it"
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("quantbench-")]


@pytest.mark.subprocess
def test_a_signal_after_the_last_row_keeps_a_complete_status_or_finishes_it(setup, tmp_path):
    """Late in the run (the last variant timed): the status is final either way."""
    process, marker, _ = start_run(setup, tmp_path, schemes="float32")
    wait_for_line(process, "evaluating float32")
    time.sleep(4)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=DEADLINE)
    [run_dir] = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] in ("complete", "interrupted")
    assert (run_dir / "report.html").is_file()
    assert processes_with(marker) == []


@pytest.mark.subprocess
@pytest.mark.parametrize("fragment, delay", [("converting", 1.0), ("evaluating float32", 0.5)])
def test_sigkill_leaves_parseable_results_and_no_lasting_children(fragment, delay, setup, tmp_path):
    process, marker, _ = start_run(setup, tmp_path)
    wait_for_line(process, fragment)
    time.sleep(delay)
    process.kill()
    process.communicate(timeout=DEADLINE)
    [run_dir] = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())  # atomic: never half a file
    assert results["status"] == "running"  # nothing can run after SIGKILL; the truth is "running"
    assert gone(marker), f"children of a SIGKILLed run still alive after {DEADLINE} s"


@pytest.mark.subprocess
def test_children_registry_kills_what_it_started():
    from quantbench.workers import children

    sleeper = children.popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert sleeper in children.live()
        assert children.stop_all() == 1
        assert sleeper.poll() == -signal.SIGKILL
        with pytest.raises(children.Stopping):
            children.popen([sys.executable, "-c", "pass"])
    finally:
        children.reset()
        children.release(sleeper)
    children.run([sys.executable, "-c", "pass"])  # allowed again after reset
