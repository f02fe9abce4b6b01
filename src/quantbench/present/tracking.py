"""Optional experiment tracking: log a finished run to MLflow or to W&B (offline).

Both read only results.json's model and the run directory's files, so a run can also be
logged after the fact. Neither package is required; asking for one that is missing raises a
DependencyError with the pip command.

MLflow: a local SQLite store in RUN_DIR/mlflow (browse with
`mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow/mlflow.db`), or the server/store in
MLFLOW_TRACKING_URI when that is set. W&B: offline mode (WANDB_MODE=offline) under RUN_DIR,
upload later with `wandb sync`.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from quantbench.core.errors import ConfigError, DependencyError
from quantbench.core.results import RunResults

EXPERIMENT = "quantbench"
BACKENDS = ("mlflow", "wandb")
_PARAM_MAX = 500  # MLflow's historical limit on one param value; longer values are cut
_ARTIFACT_FILES = ("results.json", "results.csv", "report.html", "config.yaml")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 3}} -> {'train.epochs': 3}."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def _key(text: str) -> str:
    # Trackers accept letters, digits and a few separators in metric names.
    return re.sub(r"[^A-Za-z0-9_./ -]+", "_", text)


def variant_metrics(results: RunResults) -> dict[str, float]:
    """'<variant>/<metric>' -> value for every measured row of the first repeat."""
    metrics: dict[str, float] = {}
    for v in results.rows(0):
        if v.status == "failed":
            continue
        name = _key(v.variant)
        for field in ("accuracy", "agreement", "size_bytes", "convert_seconds"):
            value = getattr(v, field)
            if value is not None:
                metrics[f"{name}/{field}"] = float(value)
        for r in v.latency:
            metrics[f"{name}/latency_ms_{r.threads}t_{_key(r.delegate)}"] = r.median_ms
    return metrics


def epoch_metrics(results: RunResults) -> list[tuple[str, int, float]]:
    """(key, epoch, value) for every TrainingResult epoch: loss, accuracy and validation ones."""
    rows = []
    for t in results.training:
        prefix = f"train/{_key(t.name)}" + (f"_repeat{t.repeat}" if results.repeats > 1 else "")
        for e in t.epochs:
            for field in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
                value = getattr(e, field)
                if value is not None:
                    rows.append((f"{prefix}/{field}", e.epoch, float(value)))
    return rows


def results_table(results: RunResults) -> dict[str, list[Any]]:
    """Columns of the variant table (all repeats), as both trackers take a table."""
    columns = ["variant", "repeat", "source", "scheme", "policy", "status", "size_bytes",
               "accuracy", "agreement", "latency_ms", "convert_seconds", "error"]  # fmt: skip
    table: dict[str, list[Any]] = {c: [] for c in columns}
    for v in results.variants:
        for c in columns:
            table[c].append(v.latency_ms() if c == "latency_ms" else getattr(v, c))
    return table


def artifacts(results: RunResults, run_dir: Path) -> list[tuple[Path, str]]:
    """(file, folder in the tracker) for the .tflite files and the run's own files."""
    files, seen = [], set()
    for v in results.variants:
        if v.path and v.path.endswith(".tflite") and (run_dir / v.path).is_file():
            if v.path in seen:
                continue
            seen.add(v.path)
            files.append((run_dir / v.path, (Path("models") / Path(v.path).parent).as_posix()))
    files += [(run_dir / name, "") for name in _ARTIFACT_FILES if (run_dir / name).is_file()]
    return files


def _recommended(results: RunResults) -> str | None:
    rec = results.extras.get("recommendation")
    return rec.get("chosen") if isinstance(rec, dict) else None


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(
            f"--track {extra} needs the {extra} package, which is not installed",
            tip=f"pip install 'quantbench[{extra}]'  (or: pip install {extra})",
        ) from None


def check_available(backend: str) -> None:
    """Preflight: fail before training when the tracker's package is missing (cheap: no import)."""
    import importlib.util

    if backend not in BACKENDS:
        raise ConfigError(f"unknown tracker {backend!r}", tip="use mlflow or wandb")
    if importlib.util.find_spec(backend) is None:
        _require(backend, backend)


def log_mlflow(results: RunResults, run_dir: Path) -> str:
    _require("mlflow", "mlflow")
    import logging

    # MLflow announces creating its tables at INFO; the CLI prints where the run went instead.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    artifact_location = None
    if not uri:
        store = (run_dir / "mlflow").resolve()
        store.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{store / 'mlflow.db'}"
        artifact_location = (store / "artifacts").as_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (experiment.experiment_id if experiment else
                     client.create_experiment(EXPERIMENT, artifact_location=artifact_location))  # fmt: skip
    tags = {"quantbench.run_dir": str(run_dir.resolve()), "quantbench.status": results.status}
    if _recommended(results):
        tags["quantbench.recommended"] = _recommended(results)
    run = client.create_run(experiment_id, run_name=results.name, tags=tags)
    run_id = run.info.run_id
    try:
        params = [Param(_key(k)[:250], str(v)[:_PARAM_MAX])
                  for k, v in flatten(results.config).items()]  # fmt: skip
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, step, v in epoch_metrics(results)]
        metrics += [Metric(k, v, stamp, 0) for k, v in variant_metrics(results).items()]
        for i in range(0, len(params), 100):  # MLflow caps one batch at 100 params
            client.log_batch(run_id, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        client.log_table(run_id, data=results_table(results), artifact_file="results_table.json")
        for path, folder in artifacts(results, run_dir):
            client.log_artifact(run_id, str(path), artifact_path=folder or None)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED" if results.status != "failed" else "FAILED")
    return f"{uri} (experiment {EXPERIMENT}, run {run_id})"


def log_wandb(results: RunResults, run_dir: Path) -> str:
    wandb = _require("wandb", "wandb")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=EXPERIMENT, name=results.name, dir=str(run_dir.resolve()),
                     config=flatten(results.config), mode=os.environ["WANDB_MODE"],
                     tags=[results.status])  # fmt: skip
    try:
        run.define_metric("epoch")
        run.define_metric("train/*", step_metric="epoch")
        by_epoch: dict[int, dict[str, float]] = {}
        for key, epoch, value in epoch_metrics(results):
            by_epoch.setdefault(epoch, {})[key] = value
        for epoch in sorted(by_epoch):
            run.log({"epoch": epoch, **by_epoch[epoch]})
        table = results_table(results)
        columns = list(table)
        rows = [[table[c][i] for c in columns] for i in range(len(results.variants))]
        run.log({"results": wandb.Table(columns=columns, data=rows)})
        for key, value in variant_metrics(results).items():
            run.summary[key] = value
        if _recommended(results):
            run.summary["recommended"] = _recommended(results)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", results.name) or "run"
        models = wandb.Artifact(f"{slug}-models", type="model")
        files = wandb.Artifact(f"{slug}-results", type="results")
        for path, folder in artifacts(results, run_dir):
            target = models if folder.startswith("models") else files
            target.add_file(str(path), name=str(Path(folder) / path.name) if folder else path.name)
        run.log_artifact(models)
        run.log_artifact(files)
        where = str(Path(run.dir).parent)
    finally:
        run.finish()
        # finish() can return before the offline record is flushed to disk; tearing down
        # wandb's background service waits for it, so the files are complete on return.
        wandb.teardown()
    return where


def log_run(results: RunResults, run_dir: str | Path, backend: str) -> str:
    """Log `results` and RUN_DIR's files to `backend` ("mlflow" or "wandb"); returns where."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown tracker {backend!r}", tip="use mlflow or wandb")
    run_dir = Path(run_dir)
    return (log_mlflow if backend == "mlflow" else log_wandb)(results, run_dir)
