"""Resume and cache: a killed run finishes where it stopped; the same config twice redoes nothing.

The kill test asserts invariants that hold wherever the SIGKILL lands (rows finished before it
are unchanged, nothing is measured twice, the run completes), so its timing cannot make it flaky.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_image_folder
from tests.test_cli import assert_clean_error, quantbench

FAST = ["--latency-runs", "5", "--threads", "1", "--calibration-images", "8"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny trained CNN saved as .keras and its photos."""
    from tests.test_quantize import _fit, sequential_cnn

    root = tmp_path_factory.mktemp("resume")
    photos = make_image_folder(root / "photos", per_class=14, size=32)
    model = _fit(sequential_cnn(), photos, 32, epochs=10)
    path = root / "tiny.keras"
    model.save(path)
    return path, photos


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _fingerprint(run_dir: Path, row: dict) -> tuple:
    path = run_dir / row["path"] if row.get("path") else None
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else None
    return (row["status"], row["accuracy"], row["agreement"], row["eval_seconds"],
            json.dumps(row["latency"]), digest)  # fmt: skip


def _quantize(model: Path, photos: Path, out: Path, *extra: str) -> list[str]:
    return ["quantize", str(model), "--data", str(photos), "--output-dir", str(out), *FAST, *extra]


@pytest.mark.subprocess
@pytest.mark.slow
def test_sigkill_then_resume_keeps_finished_rows_and_measures_nothing_twice(tiny_model, tmp_path):
    model, photos = tiny_model
    args = _quantize(model, photos, tmp_path / "runs", "--qat-epochs", "1")
    process = subprocess.Popen([sys.executable, "-m", "quantbench", *args], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    run_dir, rows = None, []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        dirs = list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
        if dirs:
            run_dir = dirs[0]
            try:
                rows = _results(run_dir)["variants"]
            except (OSError, ValueError):
                rows = []
            if len(rows) >= 3:  # the reference and a couple of conversions are done
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert run_dir is not None
    before = _results(run_dir)
    assert before["status"] == "running"  # a SIGKILL leaves no chance to say otherwise
    finished = {r["id"]: _fingerprint(run_dir, r) for r in before["variants"]}
    assert finished

    done = quantbench("quantize", str(model), "--data", str(photos), "--resume", str(run_dir),
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = _results(run_dir)
    assert after["status"] == "complete" and after["resumed"]
    ids = [r["id"] for r in after["variants"]]
    assert len(ids) == len(set(ids))  # no variant twice
    for row in after["variants"]:
        if row["id"] in finished:
            assert _fingerprint(run_dir, row) == finished[row["id"]], row["variant"]
    evaluated = [line.split()[-1] for line in done.stderr.splitlines() if "evaluating" in line]
    finished_names = {r["variant"] for r in before["variants"]}
    assert not finished_names & set(evaluated)
    names = [r["variant"] for r in after["variants"]]
    assert names[0] == "keras_float" and "qat_finetune_int8" in names
    assert all(r["accuracy"] is not None for r in after["variants"] if r["status"] != "failed")


@pytest.mark.subprocess
@pytest.mark.slow
def test_same_config_twice_reuses_the_cache_and_no_cache_does_not(tiny_model, tmp_path):
    model, photos = tiny_model
    first = quantbench(*_quantize(model, photos, tmp_path / "runs", "--name", "a"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = quantbench(*_quantize(model, photos, tmp_path / "runs", "--name", "b"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    a, b = (_results(next((tmp_path / "runs").glob(f"*-{n}"))) for n in "ab")
    assert "evaluating" in first.stderr and "evaluating" not in second.stderr
    assert "(6 cached)" in second.stderr
    for row_a, row_b in zip(a["variants"], b["variants"], strict=True):
        assert row_a["id"] == row_b["id"]
        assert (row_a["accuracy"], row_a["agreement"]) == (row_b["accuracy"], row_b["agreement"])
        if row_b["kind"] == "tflite" and row_b["status"] == "ok":
            assert {"conversion", "accuracy", "latency"} <= set(row_b["reused"])
            assert not row_a["reused"]
    fresh = quantbench(*_quantize(model, photos, tmp_path / "runs", "--name", "c", "--no-cache"),
                       cwd=tmp_path)  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    c = _results(next((tmp_path / "runs").glob("*-c")))
    assert not any(r["reused"] for r in c["variants"]) and "evaluating" in fresh.stderr
    assert [r["accuracy"] for r in c["variants"]] == [r["accuracy"] for r in a["variants"]]


@pytest.mark.subprocess
def test_resume_with_a_different_config_names_the_difference(tiny_model, tmp_path):
    model, photos = tiny_model
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    from quantbench.engine import configure as config

    cfg = config.resolve("default", overrides={"data.dir": str(photos), "train.epochs": 3})
    (run_dir / "config.yaml").write_text(json.dumps(cfg.to_dict()))
    done = quantbench("run", "--resume", str(run_dir), "--epochs", "4", cwd=tmp_path)
    assert_clean_error(done, "train.epochs=3", "asks for 4")
    done = quantbench("run", "--resume", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert_clean_error(done, "not a quantbench run directory")
    # Flags that repeat the run's own config are fine: the error is about the data, later.
    assert config.for_resume(run_dir, {"train.epochs": 3}).train.epochs == 3


def test_cache_environment_variable_is_honoured(tiny_model, tmp_path, monkeypatch):
    from quantbench.store import default_root

    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "elsewhere"))
    assert default_root() == (tmp_path / "elsewhere").absolute()
    assert os.environ["QUANTBENCH_CACHE"].endswith("elsewhere")


@pytest.mark.subprocess
@pytest.mark.slow
def test_run_twice_says_float_model_cached_and_keeps_model_keras(tmp_path):
    photos = make_image_folder(tmp_path / "photos", per_class=8, size=32)
    args = ["run", "--data", str(photos), "--weights", "none", "--image-size", "32", "--epochs", "1",
            "--schemes", "float32", "--transforms", "", "--calibration-images", "4",
            "--latency-runs", "5", "--threads", "1", "--output-dir", str(tmp_path / "runs")]  # fmt: skip
    first = quantbench(*args, "--name", "cold", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "training the float baseline" in first.stderr
    second = quantbench(*args, "--name", "warm", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "float model: cached" in second.stderr
    assert "training the float baseline" not in second.stderr
    cold, warm = (next((tmp_path / "runs").glob(f"*-{n}")) for n in ("cold", "warm"))
    assert (warm / "model.keras").read_bytes() == (cold / "model.keras").read_bytes()
    rows = {r["variant"]: r for r in _results(warm)["variants"]}
    assert rows["keras_float"]["size_bytes"] == (warm / "model.keras").stat().st_size
    assert rows["keras_float"]["accuracy"] == _results(cold)["variants"][0]["accuracy"]
    assert _results(warm)["training"] == _results(cold)["training"]  # the record, reused


@pytest.mark.pipeline
@pytest.mark.slow
def test_the_python_api_writes_nothing_to_stdout(tiny_model, tmp_path, capfd):
    import quantbench

    model, photos = tiny_model
    events: list[tuple[str, str]] = []
    table, run_dir = quantbench.quantize(
        str(model), data=str(photos), schemes=["float32", "int8"], latency_runs=5, threads=1,
        output_dir=str(tmp_path / "runs"), on_event=lambda level, text: events.append((level, text)),
    )  # fmt: skip
    captured = capfd.readouterr()
    assert captured.out == ""  # file descriptor 1 itself: no print, no native library chatter
    assert list(table["variant"]) == ["keras_float", "float32", "int8"]
    assert any(level == "step" and "converting the float model" in text for level, text in events)
    assert (run_dir / "report.html").is_file()
