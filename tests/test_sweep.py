"""`quantbench sweep`: the sweep file, the trial grid and identity, scheduling by model group,
resume, failures, the report across trials; one end-to-end local sweep on tiny photos.

Ray (a two-node test cluster on this machine) is in test_sweep_ray.py."""

from __future__ import annotations

import csv
import io
import json
from concurrent.futures import Future
from pathlib import Path

import pytest

from quantbench.commands import sweep
from quantbench.core.errors import ConfigError
from quantbench.core.results import RunResults
from tests.conftest import make_image_folder
from tests.fixtures_results import make_results, make_run_dir


def _spec(tmp_path: Path, text: str) -> sweep.SweepSpec:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return sweep.load_spec(path)


GRID = "base: {preset: smoke}\naxes: {model.alpha: [0.35, 0.5], data.image_size: [64, 96]}\n"


def test_grid_resolves_every_trial_with_stable_identity(tmp_path):
    spec = _spec(tmp_path, GRID)
    trials = sweep.trials_of(spec, tmp_path / "a")
    assert [t.label for t in trials] == ["alpha=0.35 image_size=64", "alpha=0.35 image_size=96",
                                         "alpha=0.5 image_size=64", "alpha=0.5 image_size=96"]  # fmt: skip
    assert [(t.config["model"]["alpha"], t.config["data"]["image_size"]) for t in trials] == [
        (0.35, 64), (0.35, 96), (0.5, 64), (0.5, 96)]  # fmt: skip
    assert all(t.config["data"]["max_images_per_class"] == 24 for t in trials)  # the smoke base
    # Identity is the resolved config, not where it is written: another sweep dir, same ids.
    assert [t.id for t in sweep.trials_of(spec, tmp_path / "b")] == [t.id for t in trials]
    assert len({t.id for t in trials}) == 4
    assert Path(trials[0].config["output_dir"]) == tmp_path / "a" / "trials" / trials[0].id
    assert len(sweep.trials_of(spec, tmp_path / "a", max_trials=3)) == 3


def test_trials_sharing_a_model_share_a_group(tmp_path):
    spec = _spec(tmp_path, "base: {preset: smoke}\naxes: {convert.calibration_images: [8, 16], "
                           "model.alpha: [0.35, 0.5]}\n")  # fmt: skip
    trials = sweep.trials_of(spec, tmp_path)
    groups = {t.label: t.group for t in trials}
    assert groups["calibration_images=8 alpha=0.35"] == groups["calibration_images=16 alpha=0.35"]
    assert groups["calibration_images=8 alpha=0.35"] != groups["calibration_images=8 alpha=0.5"]
    assert len({t.id for t in trials}) == 4


@pytest.mark.parametrize(("text", "message"), [
    ("base: {preset: smoke}\naxis: {model.alpha: [0.35]}\n", "unknown sweep key 'axis' (did you mean 'axes'?)"),
    ("base: {preset: smoke}\naxes: {model.alpah: [0.35]}\n", "unknown sweep axis 'model.alpah' (did you mean 'alpha'?)"),
    ("base: {preset: smoke}\naxes: {model.alpha: [0.35, 5]}\n", "sweep trial alpha=5: bad value for 'model.alpha'"),
    ("base: {preset: smoke}\naxes: {model.alpha: 0.35}\n", "must be a non-empty list"),
    ("base: {preset: smok}\naxes: {model.alpha: [0.35]}\n", "did you mean 'smoke'"),
    ("schema_version: 7\naxes: {model.alpha: [0.35]}\n", "schema_version"),
    ("base: {preset: smoke, sett: {}}\n", "unknown sweep key 'base.sett' (did you mean 'set'?)"),
])  # fmt: skip
def test_bad_sweep_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        sweep.trials_of(_spec(tmp_path, text), tmp_path)
    assert message in info.value.message


class FakeEngine:
    """Runs nothing: records what was running when each trial started, fails on request."""

    name = "fake"

    def __init__(self, slots: int, fail: set[str] = frozenset()):
        self.slots, self.fail = slots, fail
        self.running: list = []
        self.started: list[tuple[str, list[str]]] = []  # (label, labels running at the time)
        self.completed_then: dict[str, list[str]] = {}  # label -> labels completed before it
        self.completed: list[str] = []
        self.closed = False

    def submit(self, trial, emit):
        self.started.append((trial.label, [t.label for t in self.running]))
        self.completed_then[trial.label] = list(self.completed)
        self.running.append(trial)
        future: Future = Future()
        future.trial = trial
        return future

    def wait(self, handles):
        handle = handles[0]  # finish in start order
        trial = handle.trial
        self.running.remove(trial)
        if trial.label in self.fail:
            return handle, {"status": "failed", "error": "boom", "node": "n1"}
        self.completed.append(trial.label)
        run_dir = make_run_dir(Path(trial.config["output_dir"]) / "run",
                               make_results(name=trial.label, photos=True))  # fmt: skip
        return handle, {"status": "complete", "run_dir": str(run_dir), "node": "n1", "seconds": 1.0,
                        "latency_intervals": [("n1", 1.0, 2.0)]}  # fmt: skip

    def close(self):
        self.closed = True


@pytest.mark.pipeline
def test_siblings_of_a_model_wait_for_the_first_and_failures_do_not_stop_the_sweep(tmp_path):
    spec = _spec(tmp_path, "base: {preset: smoke}\naxes: {model.alpha: [0.35, 0.5], "
                           "convert.calibration_images: [8, 16, 24]}\n")  # fmt: skip
    engine = FakeEngine(slots=3, fail={"alpha=0.5 calibration_images=8"})
    events = []
    state, sweep_dir = sweep.run_sweep(spec, output_dir=tmp_path, engine=engine,
                                       emit=lambda level, text: events.append((level, text)))  # fmt: skip
    trials = {t.label: t for t in sweep.trials_of(spec, sweep_dir)}
    for label, others in engine.started:
        same = [o for o in others if trials[o].group == trials[label].group]
        trained = [o for o in engine.completed_then[label] if trials[o].group == trials[label].group]
        assert not same or trained, f"{label} started while {same} (same model, not yet in the "
        "store) was still running"
    overlapped = [label for label, others in engine.started if others]
    assert overlapped  # the engine's three slots were used
    assert engine.started[0][0] == "alpha=0.35 calibration_images=8"
    assert engine.started[1] == ("alpha=0.5 calibration_images=8", ["alpha=0.35 calibration_images=8"])
    counts = state.counts()
    assert (counts["complete"], counts["failed"]) == (5, 1)
    failed = next(t for t in state.trials if t.status == "failed")
    assert failed.error == "boom" and failed.label == "alpha=0.5 calibration_images=8"
    assert engine.closed
    assert any(level == "warn" and "failed: boom" in text and "1 failed" in text for level, text in events)
    saved = sweep.load_state(sweep_dir)
    assert saved.counts() == counts
    assert saved.trials[0].latency_intervals[0].node == "n1"


@pytest.mark.pipeline
def test_a_sweep_run_again_skips_finished_trials(tmp_path):
    spec = _spec(tmp_path, GRID)
    first = FakeEngine(slots=1)
    sweep.run_sweep(spec, output_dir=tmp_path, engine=first, max_trials=2)
    second = FakeEngine(slots=1)
    state, _ = sweep.run_sweep(spec, output_dir=tmp_path, engine=second)
    assert [label for label, _ in second.started] == ["alpha=0.5 image_size=64", "alpha=0.5 image_size=96"]
    assert [t.skipped for t in state.trials] == [True, True, False, False]
    assert state.counts()["complete"] == 4


def test_an_interrupted_trial_is_resumed_in_its_own_run_directory(tmp_path):
    trial_dir = tmp_path / "trial"
    make_run_dir(trial_dir / "20260101-000000-a", make_results(name="a"))
    killed = make_results(name="b")
    killed.status = "running"
    make_run_dir(trial_dir / "20260101-000100-b", killed)
    assert sweep.finished_run(trial_dir) == (trial_dir / "20260101-000000-a", trial_dir / "20260101-000100-b")
    assert sweep.finished_run(tmp_path / "none") == (None, None)


@pytest.mark.pipeline
def test_sweep_report_one_table_one_front_one_recommendation(tmp_path):
    from quantbench.report.sweep import CSV_FILE, REPORT_FILE, SEP

    spec = _spec(tmp_path, GRID)
    state, sweep_dir = sweep.run_sweep(spec, output_dir=tmp_path, engine=FakeEngine(slots=1),
                                       max_trials=2)  # fmt: skip
    # Make the second trial's int8 smaller than anything else: it must win on size.
    record = state.trials[1]
    results = RunResults.model_validate_json((Path(record.run_dir) / "results.json").read_text())
    results.variant("int8").size_bytes = 100_000
    make_run_dir(Path(record.run_dir), results)
    from quantbench.report.sweep import write_sweep_report

    from quantbench.core.config import RecommendConfig

    rec = write_sweep_report(state, sweep_dir, RecommendConfig(confidence="estimate", max_accuracy_drop=2))
    assert rec.chosen == f"{record.label}{SEP}int8" and rec.trial == record.id
    assert f"{record.label}{SEP}int8" in rec.pareto
    assert f"{state.trials[0].label}{SEP}int8" not in rec.pareto  # dominated: same accuracy, bigger
    rows = list(csv.DictReader(io.StringIO((sweep_dir / CSV_FILE).read_text())))
    per_trial = {t.label: sum(r["trial"] == t.label for r in rows) for t in state.trials}
    assert per_trial[state.trials[0].label] == len(results.variants)
    assert [r["recommended"] for r in rows].count("True") == 1
    assert rows[0]["model.alpha"] == "0.35" and rows[0]["data.image_size"] == "64"
    page = (sweep_dir / REPORT_FILE).read_text()
    assert "Recommendation across trials" in page and record.label in page
    assert json.loads((sweep_dir / "recommendation.json").read_text())["variant"] == "int8"


def test_latency_guard_is_held_while_latency_is_measured_and_names_the_node():
    from quantbench.engine.context import Resources

    held = []

    class Slot:
        def __enter__(self):
            held.append("in")

        def __exit__(self, *exc):
            held.append("out")

    plain = Resources(cores=1, convert_workers=1)
    with plain.latency_guard():
        pass
    resources = Resources(cores=1, convert_workers=1, node="n7", latency_slot=Slot)
    with resources.latency_guard():
        assert held == ["in"]
    assert held == ["in", "out"]


@pytest.mark.pipeline
@pytest.mark.slow
def test_local_sweep_end_to_end_on_tiny_photos(tmp_path, monkeypatch):
    """Two trials through runner.run in this process: complete, latency guarded and from this
    node, a report and a CSV; run again, nothing runs. Busy figures are not measured again
    (`wait_quiet: null`): each would take one more guarded interval (CI, under load: 4 for 2)."""
    from quantbench.report.sweep import CSV_FILE
    from quantbench.commands.sweep_engines import LocalEngine

    photos = make_image_folder(tmp_path / "photos", per_class=10, size=32)
    spec = _spec(tmp_path, f"""
base:
  preset: smoke
  set: {{data.dir: {photos}, model.weights: none, data.max_images_per_class: null,
        evaluate.threads: [1], evaluate.latency_runs: 3, convert.schemes: [float32, dynamic_range],
        evaluate.wait_quiet: null}}
axes: {{data.image_size: [32, 40]}}
""")  # fmt: skip
    events = []
    state, sweep_dir = sweep.run_sweep(spec, output_dir=tmp_path / "out", engine=LocalEngine(parallel=1),
                                       emit=lambda level, text: events.append(text))  # fmt: skip
    assert state.counts()["complete"] == 2, [t.error for t in state.trials]
    for record in state.trials:
        results = RunResults.model_validate_json((Path(record.run_dir) / "results.json").read_text())
        timed = [v for v in results.variants if v.latency]
        assert timed and all(f.node == record.node for v in timed for f in v.latency)
        measured = [v for v in timed if v.status == "ok" and "latency" not in v.reused]
        assert len(record.latency_intervals) == len(measured)
        assert Path(record.run_dir).parent.parent == sweep_dir / "trials"
    assert any("[image_size=32] training" in e for e in events)
    assert (sweep_dir / CSV_FILE).read_text().count("\n") == 1 + sum(
        len(RunResults.model_validate_json((Path(t.run_dir) / "results.json").read_text()).variants)
        for t in state.trials)  # fmt: skip
    again = FakeEngine(slots=1)
    sweep.run_sweep(spec, output_dir=tmp_path / "out", engine=again)
    assert again.started == []


@pytest.mark.subprocess
def test_cli_bad_sweep_file_is_one_error_line_before_anything_runs(tmp_path):
    from tests.test_cli import assert_clean_error, quantbench

    path = tmp_path / "grid.yaml"
    path.write_text("base: {preset: smoke}\naxes: {model.alpah: [0.35, 0.5]}\n")
    done = quantbench("sweep", str(path), "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(done, "unknown sweep axis 'model.alpah' (did you mean 'alpha'?)", "tip:")
    assert not (tmp_path / "out").exists()
    done = quantbench("sweep", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert_clean_error(done, "missing.yaml")


@pytest.mark.subprocess
@pytest.mark.slow
def test_sigkill_after_two_trials_then_only_the_other_two_run(tmp_path):
    """Kill the sweep driver (SIGKILL: no cleanup) once two trials are complete; the same
    command again skips those two and runs the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    photos = make_image_folder(tmp_path / "photos", per_class=8, size=32)
    path = tmp_path / "grid.yaml"
    path.write_text(f"""
base:
  preset: smoke
  set: {{data.dir: {photos}, model.weights: none, data.max_images_per_class: null,
        evaluate.threads: [1], evaluate.latency_runs: 3, convert.schemes: [float32]}}
axes: {{data.image_size: [32, 40], train.seed: [1, 2]}}
""")  # fmt: skip
    args = [sys.executable, "-m", "quantbench", "sweep", str(path), "--output-dir", str(tmp_path / "out")]
    state_file = tmp_path / "out" / "sweep-grid" / "sweep.json"
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            if state_file.exists() and json.loads(state_file.read_text())["trials"] and \
                    sweep.load_state(state_file.parent).counts()["complete"] >= 2:  # fmt: skip
                break
            time.sleep(0.2)
        assert process.poll() is None, "the sweep ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    first = sweep.load_state(state_file.parent)
    finished = {t.id for t in first.trials if t.status == "complete"}
    assert len(finished) == 2
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    second = sweep.load_state(state_file.parent)
    assert {t.id for t in second.trials if t.skipped} == finished
    assert all(t.status == "complete" for t in second.trials)
    for t in second.trials:  # the skipped trials were not run again: one run directory each
        if t.id in finished:
            assert len(list((state_file.parent / "trials" / t.id).glob("*/results.json"))) == 1


def test_a_quantize_sweep_takes_the_quantize_defaults(tmp_path):
    photos = make_image_folder(tmp_path / "photos", per_class=4, size=16)
    spec = _spec(tmp_path, f"command: quantize\nbase: {{set: {{quantize.model: m.keras, "
                           f"data.dir: {photos}}}}}\naxes: {{convert.calibration_images: [4, 8]}}\n")  # fmt: skip
    trials = sweep.trials_of(spec, tmp_path)
    assert [t.config["transforms"] for t in trials] == [[], []]  # no QAT unless asked
    assert not any(t.size_given for t in trials)  # the model's own input size
    assert len({t.group for t in trials}) == 1


@pytest.mark.pipeline
def test_local_pool_records_each_failed_trial_and_goes_on(tmp_path):
    """Two trials at once in a process pool (the latency lock shared through a manager); both
    fail fast on a missing photo folder: each failure is recorded with its error."""
    from quantbench.commands.sweep_engines import LocalEngine

    spec = _spec(tmp_path, f"base: {{preset: smoke, set: {{data.dir: {tmp_path / 'nope'}}}}}\n"
                           "axes: {model.alpha: [0.35, 0.5]}\n")  # fmt: skip
    engine = LocalEngine(parallel=2, cpus_per_trial=1)
    assert engine.slots == 2
    state, _ = sweep.run_sweep(spec, output_dir=tmp_path / "out", engine=engine)
    assert [t.status for t in state.trials] == ["failed", "failed"]
    assert all("data folder not found" in t.error for t in state.trials)
    assert engine._pool is None  # closed


@pytest.mark.pipeline
@pytest.mark.realdata
@pytest.mark.slow
def test_calibration_sweep_on_real_photos_trains_once(tmp_path, flowers_dir, real_keras_home, monkeypatch):
    """Two calibration sizes on real flowers: the second trial reuses the first's trained
    model, its reference accuracy and the conversion that reads no calibration images, and
    converts its own int8."""
    from quantbench.commands.sweep_engines import LocalEngine

    monkeypatch.setenv("KERAS_HOME", str(real_keras_home))
    spec = _spec(tmp_path, f"""
base:
  preset: smoke
  set: {{data.dir: {flowers_dir}, data.max_images_per_class: 12, evaluate.threads: [1],
        evaluate.latency_runs: 3, targets.check: false, convert.schemes: [float32, int8]}}
axes: {{convert.calibration_images: [4, 8]}}
""")  # fmt: skip
    engine = LocalEngine(parallel=1, cache=str(tmp_path / "store"))
    state, _ = sweep.run_sweep(spec, output_dir=tmp_path / "out", engine=engine)
    assert state.counts()["complete"] == 2, [t.error for t in state.trials]
    rows = [{v.variant: v for v in RunResults.model_validate_json(
        (Path(t.run_dir) / "results.json").read_text()).variants} for t in state.trials]  # fmt: skip
    # One trial trained; the other loaded its model and reused its reference accuracy.
    assert sorted(r["keras_float"].reused == ["accuracy"] for r in rows) == [False, True]
    later = next(r for r in rows if r["keras_float"].reused)
    assert rows[0]["keras_float"].accuracy == rows[1]["keras_float"].accuracy
    assert "conversion" in later["float32"].reused and "conversion" not in later["int8"].reused
    assert rows[0]["int8"].status == rows[1]["int8"].status == "ok"
