"""End to end on the real tf_flowers photos: the smoke preset through the CLI."""

from __future__ import annotations

import json

import pytest

from quantbench.techniques.schemes import SCHEMES
from tests.test_cli import quantbench

pytestmark = [pytest.mark.realdata, pytest.mark.slow, pytest.mark.pipeline]


@pytest.fixture(scope="module")
def smoke_run(real_keras_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    done = quantbench("run", "--preset", "smoke", "--output-dir", str(out / "runs"), cwd=out,
                      env={"KERAS_HOME": str(real_keras_home)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next((out / "runs").iterdir())
    return done, run_dir, json.loads((run_dir / "results.json").read_text())


def test_smoke_run_measures_every_scheme(smoke_run):
    done, run_dir, results = smoke_run
    assert results["status"] == "complete"
    rows = {v["variant"]: v for v in results["variants"]}
    assert list(rows) == ["keras_float", *SCHEMES.defaults()]
    for name in SCHEMES.defaults():
        row = rows[name]
        assert row["status"] in ("ok", "failed")
        if row["status"] == "ok":
            assert (run_dir / row["path"]).is_file()
            assert row["size_bytes"] == (run_dir / row["path"]).stat().st_size
            assert 0 <= row["accuracy"] <= 1 and 0 <= row["agreement"] <= 1
            assert row["latency"] and row["latency"][0]["runs"] >= 50
            assert row["convert_seconds"] > 0
        else:
            assert row["error"]
        assert name in done.stdout
    assert rows["int8_io"]["input_dtype"] == "int8"


def test_smoke_float32_matches_keras_and_sizes_shrink(smoke_run):
    _, _, results = smoke_run
    rows = {v["variant"]: v for v in results["variants"]}
    assert rows["float32"]["agreement"] >= 0.95
    assert abs(rows["float32"]["accuracy"] - rows["keras_float"]["accuracy"]) <= 0.05
    assert rows["float32"]["size_bytes"] / rows["int8"]["size_bytes"] > 2.5
    assert 1.7 < rows["float32"]["size_bytes"] / rows["float16"]["size_bytes"] < 2.2


def test_smoke_run_records_data_training_and_environment(smoke_run):
    done, run_dir, results = smoke_run
    assert results["data"]["classes"] == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert sum(results["data"]["class_counts"].values()) == 5 * 24
    training = results["training"][0]
    assert len(training["epochs"]) == 1 and training["total_seconds"] > 0
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(training["epochs"][0])
    env = results["environment"]
    assert env["tensorflow"].startswith("2.21") and env["litert"] and env["cpu_cores"] >= 1
    assert (run_dir / "config.yaml").is_file() and (run_dir / "results.csv").is_file()
    assert (run_dir / "model.keras").is_file()
    assert str(run_dir) in done.stdout
