"""Typed, versioned run results: what `results.json` holds, written atomically.

The report, `compare` and the recommendation read only this file, so nothing here imports
TensorFlow. Metrics know their direction (`METRICS`), so code that ranks variants never
guesses whether more is better.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticSerializationError

from quantbench import atomic
from quantbench.errors import QuantbenchError, displayable, machine_error
from quantbench.plan import VariantSpec
from quantbench.result_details import (  # noqa: F401 - the parts of a run's results, public here
    EpochRecord, LatencyResult, LayerAnalysis, LayerError, PairedDifference, SearchCandidate,
    SelectiveSearch, TargetResult, TensorStats, TrainingResult, WeightStats, _Model,
)  # fmt: skip

RESULTS_SCHEMA_VERSION = 2  # 2: every variant carries its spec and id; typed extras
RESULTS_FILE = "results.json"
CSV_FILE = "results.csv"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("accuracy", "accuracy", "%", True),
        Metric("agreement", "agreement with float", "%", True),
        Metric("size_bytes", "size", "bytes", False),
        Metric("gzip_bytes", "gzip size", "bytes", False),
        Metric("latency_ms", "latency (median)", "ms", False),
        Metric("convert_seconds", "conversion time", "s", False),
        Metric("train_seconds", "training time", "s", False),
    ]
}



class VariantResult(_Model):
    id: str | None = None  # the spec's stable hash (plan.VariantSpec.id); None in version 1
    spec: VariantSpec | None = None  # what this variant is: transforms, conversion, repeat
    variant: str  # unique row name, derived from the spec, e.g. "int8" or "qat_finetune_int8"
    source: str = "float"  # which Keras model it comes from: "float", "qat_finetune", ...
    repeat: int = 0  # index of the training repeat (different seed) this row belongs to
    scheme: str | None = None  # None for the Keras reference row
    policy: str
    kind: Literal["keras", "tflite"] = "tflite"
    status: Literal["ok", "failed", "identical"] = "ok"
    error: str | None = None
    identical_to: str | None = None
    path: str | None = None  # relative to the run directory
    size_bytes: int | None = None
    gzip_bytes: int | None = None  # the file gzipped (filestats.GZIP_LEVEL): the download size
    weights: WeightStats | None = None  # what the file's weight tensors hold (filestats.py)
    convert_seconds: float | None = None
    input_dtype: str | None = None
    output_dtype: str | None = None
    accuracy: float | None = None  # fraction 0..1 on the validation split
    agreement: float | None = None  # fraction of top-1 predictions equal to the float Keras model's
    eval_images: int | None = None
    eval_seconds: float | None = None
    per_class_accuracy: dict[str, float] = Field(default_factory=dict)
    confusion: list[list[int]] = Field(default_factory=list)  # rows: true class, cols: predicted
    latency: list[LatencyResult] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # one-line explanations of surprises
    reused: list[str] = Field(default_factory=list)  # stages taken from the store, not redone
    # Image-level uncertainty (intervals.py); None in results written before it existed.
    accuracy_ci: list[float] | None = None  # [low, high], 95% Wilson interval over the photos
    agreement_ci: list[float] | None = None
    vs_reference: PairedDifference | None = None
    selective: SelectiveSearch | None = None  # the search that chose this variant's float layers
    # Top-1 class of every scored photo, in DataSummary.eval_labels' order (encode_classes):
    # ~1 byte a photo, so 3670 photos x 20 variants add ~100 KB to results.json.
    predictions: str | None = None
    targets: dict[str, TargetResult] = Field(default_factory=dict)  # by target name (targets/)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def latency_ms(self, threads: int | None = None) -> float | None:
        """Median latency at `threads` (default: the first measured), XNNPACK preferred."""
        figure = self.latency_figure(threads)
        return figure.median_ms if figure else None

    def latency_figure(self, threads: int | None = None,
                       runtime: str | None = None) -> LatencyResult | None:  # fmt: skip
        """The figure latency_ms reports: XNNPACK preferred, then the Interpreter (the runtime
        quantbench evaluates with), unless `runtime` names one."""
        rows = [r for r in self.latency if (threads is None or r.threads == threads)
                and (runtime is None or r.runtime == runtime)]  # fmt: skip
        rows.sort(key=lambda r: (r.delegate != "xnnpack", r.runtime != "interpreter"))
        return rows[0] if rows else None


class SkippedFile(_Model):
    path: str
    reason: str


class DataSummary(_Model):
    source: str
    classes: list[str]
    class_counts: dict[str, int]
    train_count: int
    val_count: int
    split_seed: int
    validation_split: float
    image_size: int
    skipped: list[SkippedFile] = Field(default_factory=list)
    duplicate_groups: int = 0
    # What was scored: the true class of each scored photo in order (encode_classes), and a
    # sha1 over the photos' own sha1s, so two runs can tell whether they scored the same photos.
    eval_labels: str | None = None
    eval_digest: str | None = None
    eval_split: str | None = None  # how the scored photos were chosen, in words
    calibration_count: int | None = None  # photos the representative dataset drew from
    search_count: int | None = None  # training photos held out of training for a search


class Environment(_Model):
    quantbench: str
    python: str
    platform: str
    cpu_model: str
    cpu_cores: int
    tensorflow: str | None = None
    tf_keras: str | None = None
    litert: str | None = None
    tfmot: str | None = None
    numpy: str | None = None


class Extras(_Model):
    """Derived sections the report reads; each filled by the module named beside it."""

    model_config = ConfigDict(extra="allow")  # sections of newer versions are kept

    summary: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)  # stats
    training_cost: list[dict[str, Any]] = Field(default_factory=list)  # stats
    training_summary: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)  # stats
    article_figures: list[dict[str, Any]] = Field(default_factory=list)  # article
    article_comparison: list[dict[str, Any]] = Field(default_factory=list)  # article
    recommendation: dict[str, Any] | None = None  # recommend.Recommendation
    quantize: dict[str, Any] | None = None  # quantize: the user's model and split
    check: dict[str, Any] | None = None  # check: the preprocessing check
    tracked: dict[str, str] | None = None  # tracking: {backend, where} the run was logged

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """Files written before the article was called so name it "seed": seed_figures,
        seed_comparison and their entries' seed* keys read as article*."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section in ("figures", "comparison"):
            old = data.pop(f"seed_{section}", None)
            if isinstance(old, list) and not data.get(f"article_{section}"):
                data[f"article_{section}"] = [
                    {("article" + k[4:] if k.startswith("seed") else k): v for k, v in e.items()}
                    if isinstance(e, dict) else e for e in old]  # fmt: skip
        return data

    # Mapping access, so sections read like the dict they were in version 1.
    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None or value == {} or value == [] else value

    def __getitem__(self, key: str) -> Any:
        if not hasattr(self, key):
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None


class RunResults(_Model):
    schema_version: int = RESULTS_SCHEMA_VERSION
    name: str
    command: str = "run"
    # interrupted: stopped by a signal (SIGTERM, SIGINT, SIGHUP); failed: stopped by an error.
    status: Literal["running", "complete", "failed", "interrupted"] = "running"
    created: str
    finished: str | None = None
    total_seconds: float | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    environment: Environment | None = None
    data: DataSummary | None = None
    training: list[TrainingResult] = Field(default_factory=list)
    variants: list[VariantResult] = Field(default_factory=list)
    extras: Extras = Field(default_factory=Extras)
    resumed: list[str] = Field(default_factory=list)  # when `--resume` continued this run
    models: dict[str, str] = Field(default_factory=dict)  # ModelSpec.id -> its store key
    layer_analyses: list[LayerAnalysis] = Field(default_factory=list)  # analysis.py

    def variant(self, name: str, repeat: int = 0) -> VariantResult | None:
        return next((v for v in self.variants if v.variant == name and v.repeat == repeat), None)

    def rows(self, repeat: int = 0) -> list[VariantResult]:
        """The variants of one repeat (all runs have repeat 0)."""
        return [v for v in self.variants if v.repeat == repeat]

    @property
    def repeats(self) -> int:
        return 1 + max((v.repeat for v in self.variants), default=0)

    @property
    def reference(self) -> VariantResult | None:
        """The Keras float model's row (first repeat), the baseline variants are compared with."""
        return next(
            (v for v in self.rows(0) if v.kind == "keras" and v.source == "float"), None
        )


def save(results: RunResults, run_dir: str | Path) -> Path:
    """Write results.json and results.csv atomically; safe to call after every step."""
    run_dir = Path(run_dir)
    clean = results
    try:
        text = results.model_dump_json(indent=2)
    except PydanticSerializationError:
        # A string that is no valid Unicode (an undecodable file name that reached a field
        # without errors.displayable): escape it rather than lose every measurement.
        clean = RunResults.model_validate(_displayable(results.model_dump()))
        text = clean.model_dump_json(indent=2)
    path = atomic.write_text(run_dir / RESULTS_FILE, text + "\n")
    atomic.write_text(run_dir / CSV_FILE, to_csv(clean))
    return path


def load(run_dir_or_file: str | Path) -> RunResults:
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise QuantbenchError(
            f"no results found at {path}",
            tip="pass a run directory made by `quantbench run` (it holds results.json)",
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise machine_error(e, path) from e
    except ValueError as e:
        raise QuantbenchError(f"cannot read {displayable(path)}: {e}",
                              tip="the file is damaged; re-run") from e  # fmt: skip
    if not isinstance(raw, dict):
        raise QuantbenchError(
            f"{displayable(path)} is not a quantbench results file: it holds a JSON "
            f"{_json_type(raw)}, not an object", tip=_NOT_RESULTS_TIP)  # fmt: skip
    version = raw.get("schema_version")
    if not isinstance(version, int) or version > RESULTS_SCHEMA_VERSION:
        raise QuantbenchError(
            f"{path} has schema_version {version!r}; this quantbench reads up to "
            f"{RESULTS_SCHEMA_VERSION}",
            tip="upgrade quantbench to read it",
        )
    if version < 2:
        raw = {**_upgrade_v1(raw), "schema_version": RESULTS_SCHEMA_VERSION}
    try:
        return RunResults.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise QuantbenchError(f"{displayable(path)} is malformed: {where}: {first['msg']}{more}",
                              tip=_NOT_RESULTS_TIP) from None  # fmt: skip


def _upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 rows named their model by `source` and `scheme`; give each its spec."""
    from quantbench.techniques.conversions import CONVERSIONS
    from quantbench.techniques.transforms import TRANSFORMS

    variants = raw.get("variants")
    if not isinstance(variants, list):
        return raw
    for row in variants:
        if not isinstance(row, dict) or row.get("spec") is not None:
            continue
        source = row.get("source") or "float"
        transforms = []
        if source.startswith("qat_"):
            recipe = source.removeprefix("qat_")
            try:
                transforms.append(TRANSFORMS.spec("qat", recipe=recipe))
            except QuantbenchError:
                continue  # an unknown recipe: the row keeps its name, without a spec
        scheme = row.get("scheme")
        conversion = None
        if scheme and row.get("kind", "tflite") == "tflite":
            try:
                conversion = CONVERSIONS.spec(scheme)
            except QuantbenchError:
                continue
        spec = VariantSpec(transforms=tuple(transforms), conversion=conversion,
                           repeat=int(row.get("repeat") or 0))  # fmt: skip
        row["spec"] = spec.model_dump(mode="json")
        row["id"] = spec.id
    return raw


def encode_classes(classes) -> str:
    """Class indices (one per photo) as compact text: "u8:" or "u16:" + base64 of the array."""
    import numpy as np

    values = np.asarray(classes, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError("class indices must be in 0..65535")
    wide = bool(values.size) and values.max() > 255
    data = values.astype("<u2" if wide else "u1").tobytes()
    return ("u16:" if wide else "u8:") + base64.b64encode(data).decode("ascii")


def decode_classes(text: str):
    """The inverse of `encode_classes`: an int64 numpy array."""
    import numpy as np

    kind, _, data = text.partition(":")
    dtype = {"u8": "u1", "u16": "<u2"}.get(kind)
    if dtype is None:
        raise ValueError(f"unknown class encoding {kind!r}")
    return np.frombuffer(base64.b64decode(data), dtype=dtype).astype(np.int64)


_NOT_RESULTS_TIP = "pass a run directory written by `quantbench run` or `quantbench quantize`"


def _json_type(value: Any) -> str:
    names = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _displayable(value: Any) -> Any:
    """Every string in a dumped structure (keys too) made valid UTF-8 (errors.displayable)."""
    if isinstance(value, str):
        return displayable(value)
    if isinstance(value, dict):
        return {_displayable(k): _displayable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_displayable(v) for v in value]
    return value


CSV_COLUMNS = [
    "variant", "source", "scheme", "policy", "status", "size_bytes", "gzip_bytes",
    "weight_sparsity", "max_unique_per_channel", "accuracy",
    "accuracy_ci_low", "accuracy_ci_high", "agreement", "agreement_ci_low", "agreement_ci_high",
    "difference_vs_reference", "difference_ci_low", "difference_ci_high", "mcnemar_p",
    "latency_ms", "latency_threads", "latency_busy", "convert_seconds", "eval_images", "error",
]  # fmt: skip


def to_csv(results: RunResults) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for v in results.variants:
        first = v.latency_figure()
        row = v.model_dump(include=set(CSV_COLUMNS))
        row["latency_ms"] = first.median_ms if first else None
        row["latency_threads"] = first.threads if first else None
        row["latency_busy"] = first.busy if first else None
        row["weight_sparsity"] = v.weights.sparsity if v.weights else None
        row["max_unique_per_channel"] = v.weights.max_unique_per_channel if v.weights else None
        for name in ("accuracy", "agreement"):
            ci = getattr(v, f"{name}_ci")
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = ci if ci else (None, None)
        paired = v.vs_reference
        if paired is not None:
            row["difference_vs_reference"], row["mcnemar_p"] = paired.difference, paired.p_value
            row["difference_ci_low"], row["difference_ci_high"] = paired.ci
        writer.writerow(row)
    return out.getvalue()
