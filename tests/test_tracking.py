"""Experiment tracking: a constructed run directory logged to MLflow (checked through
MlflowClient) and to W&B offline; a clean error when the package is missing."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pytest

from quantbench.core.errors import ConfigError, DependencyError
from quantbench.analysis.recommend import attach
from quantbench.report import write_report
from quantbench.present.tracking import epoch_metrics, flatten, log_run, variant_metrics
from tests.fixtures_results import make_results, make_run_dir


@pytest.fixture
def run_dir(tmp_path) -> tuple:
    results = make_results(repeats=2)
    attach(results)
    path = make_run_dir(tmp_path / "run", results)
    write_report(results, path)
    return results, path


def test_flatten_and_metric_names():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2],
                                                                        "e": None}  # fmt: skip
    results = make_results(repeats=2)
    metrics = variant_metrics(results)
    assert metrics["int8/size_bytes"] == 610_000
    assert metrics["int8/latency_ms_2t_xnnpack"] == pytest.approx(2.9 / 1.6)
    assert "int16x8/accuracy" not in metrics  # failed rows have nothing to log
    keys = {k for k, _, _ in epoch_metrics(results)}
    assert "train/float_repeat1/val_accuracy" in keys and "train/qat_finetune_repeat0/loss" in keys


def test_log_run_mlflow_is_found_through_mlflow_api(run_dir, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    results, path = run_dir
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    where = log_run(results, path, "mlflow")
    uri = f"sqlite:///{(path / 'mlflow' / 'mlflow.db').resolve()}"
    assert where.startswith(uri)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("quantbench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == results.name and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "5" and run.data.params["data.image_size"] == "64"
    assert run.data.tags["quantbench.recommended"] == "dynamic_range"
    assert run.data.metrics["int8/accuracy"] == pytest.approx(results.variant("int8").accuracy)
    history = client.get_metric_history(run.info.run_id, "train/float_repeat0/val_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]
    assert [m.value for m in history] == [e.val_accuracy for e in results.training[0].epochs]

    models = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "models")}
    assert {"float32.tflite", "int8.tflite", "int8_io.tflite", "qat_finetune_int8.tflite"} <= models
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "report.html", "results_table.json", "models"} <= top
    local = client.download_artifacts(run.info.run_id, "models/int8.tflite", str(path / "dl"))
    assert Path(local).read_bytes() == (path / "int8.tflite").read_bytes()


def test_log_run_mlflow_honours_tracking_uri(run_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    results, path = run_dir
    uri = f"sqlite:///{tmp_path / 'central.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the default artifact root is relative to the working folder
    assert log_run(results, path, "mlflow").startswith(uri)
    assert not (path / "mlflow").exists()
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("quantbench")
    assert len(MlflowClient(tracking_uri=uri).search_runs([experiment.experiment_id])) == 1


def test_log_run_wandb_offline(run_dir, monkeypatch):
    pytest.importorskip("wandb")
    results, path = run_dir
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    where = Path(log_run(results, path, "wandb"))
    assert where.is_dir() and where.parent.name == "wandb" and where.name.startswith("offline-run-")
    assert where.is_relative_to(path.resolve())
    (record,) = where.glob("*.wandb")  # the run's record, ready for `wandb sync`
    raw = record.read_bytes()
    for expected in (b"train.epochs", b"train/float_repeat0/val_accuracy", b"int8/accuracy",
                     b"models/int8.tflite", b"report.html"):  # fmt: skip
        assert expected in raw, expected
    (table,) = where.glob("files/media/table/results_*.table.json")
    assert '"qat_finetune_int8"' in table.read_text()


def test_missing_package_is_a_dependency_error(run_dir, monkeypatch):
    results, path = run_dir
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "mlflow", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    monkeypatch.setattr("importlib.import_module", lambda name: no_mlflow(name))
    with pytest.raises(DependencyError) as info:
        log_run(results, path, "mlflow")
    assert "pip install 'quantbench[mlflow]'" in info.value.tip
    with pytest.raises(ConfigError):
        log_run(results, path, "tensorboard")


def test_preflight_check(monkeypatch):
    import importlib.util

    from quantbench.present.tracking import check_available

    check_available("mlflow") if importlib.util.find_spec("mlflow") else None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(
        "importlib.import_module", lambda name: (_ for _ in ()).throw(ImportError(name))
    )
    with pytest.raises(DependencyError, match="needs the wandb package"):
        check_available("wandb")
