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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticSerializationError

from quantbench.core import atomic
from quantbench.core.errors import QuantbenchError, displayable, machine_error
from quantbench.core.specs import VariantSpec

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


# --- the parts of a row: training records, latency figures, and what a row holds beyond its
# headline figures (the paired comparison, targets, weights, per-layer analysis, search) ---


class _Model(BaseModel):
    # Results files may come from a newer quantbench: ignore fields we do not know.
    model_config = ConfigDict(extra="ignore")


class EpochRecord(_Model):
    epoch: int
    loss: float
    accuracy: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float


class TrainingResult(_Model):
    name: str  # "float" for the baseline; QAT recipes add their own
    recipe: str = "float"
    seed: int
    repeat: int = 0
    epochs: list[EpochRecord] = Field(default_factory=list)
    total_seconds: float = 0.0
    train_images: int = 0

    @property
    def seconds_per_epoch(self) -> float | None:
        return self.total_seconds / len(self.epochs) if self.epochs else None


class LatencyResult(_Model):
    threads: int
    delegate: str = "xnnpack"  # "xnnpack" or "none" (reference/builtin kernels)
    runs: int
    warmup_runs: int
    median_ms: float
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    init_ms: float | None = None
    first_invoke_ms: float | None = None
    cpu_ms: float | None = None  # median process CPU time per invoke (all threads' sum)
    peak_rss_mb: float | None = None  # RSS the model's interpreter added (fresh process)
    device: str | None = None
    inputs: str | None = None  # what was fed: "16 images" or "16 random inputs in -1..1"
    capped: bool = False  # the time cap stopped the timed runs before min_runs
    delegated_ops: int | None = None  # ops XNNPACK took over (None: XNNPACK off)
    total_ops: int | None = None  # ops in the model's main subgraph
    runtime: str = "interpreter"  # the LiteRT API timed (runtimes.RUNTIMES): or "compiled"
    # CPU other processes used during the timed loop, in cores (0..cores; busy.py), and
    # whether that took cores this figure's threads needed. None/False: not recorded.
    other_cpu: float | None = None
    busy: bool = False
    remeasured: bool = False  # measured again after waiting for quiet; the quieter figure kept
    node: str | None = None  # the machine (a sweep's Ray node) the figure was measured on


class PairedDifference(_Model):
    """This row's accuracy minus the reference's, on the same photos (fractions 0..1)."""

    reference: str  # the row compared with (the float Keras model)
    n: int  # photos scored by both
    difference: float
    ci: list[float]  # [low, high]: 95% Newcombe interval for paired proportions (intervals.py)
    p_value: float  # exact McNemar: two-sided binomial test of the discordant photos
    gained: int  # photos this row gets right and the reference wrong
    lost: int  # photos the reference gets right and this row wrong


class TargetResult(_Model):
    """Can this variant run on a target (targets/)? With the reasons, in the target's words."""

    target: str  # "mcu", "edgetpu", "gpu", "integer_only"
    ok: bool | None  # None: could not be judged (the check itself failed)
    reasons: list[str] = Field(default_factory=list)
    # arena_bytes, accuracy, and intervals as [low, high] (accuracy_ci, agreement_litert_ci)
    figures: dict[str, float | int | str | list[float] | None] = Field(default_factory=dict)


class TensorStats(_Model):
    """One weight tensor of a .tflite file as stored (filestats.py)."""

    name: str
    op: str | None = None  # the op it is the filter of: CONV_2D, DEPTHWISE_CONV_2D, ...
    dtype: str  # int8 (codes, after rounding), float32, float16
    size: int  # elements
    zeros: int
    unique: int  # distinct stored values in the tensor
    unique_per_channel: int  # the most distinct values in one output channel


class WeightStats(_Model):
    """What the file's weight tensors (conv, depthwise and fully-connected filters) hold."""

    sparsity: float  # share of zero elements over all weight tensors
    max_unique: int  # the most distinct values in one tensor
    max_unique_per_channel: int  # ... in one output channel (batch norm folding scales each)
    tensors: list[TensorStats] = Field(default_factory=list)

    @classmethod
    def of(cls, tensors: list[TensorStats]) -> WeightStats:
        size = sum(t.size for t in tensors)
        return cls(sparsity=sum(t.zeros for t in tensors) / size if size else 0.0,
                   max_unique=max((t.unique for t in tensors), default=0),
                   max_unique_per_channel=max((t.unique_per_channel for t in tensors), default=0),
                   tensors=tensors)  # fmt: skip
class LayerError(_Model):
    """One quantized op's own error (analysis.py): its output against the float op's."""

    rank: int  # 1 = the worst
    op: str  # TF Lite op, e.g. DEPTHWISE_CONV_2D
    tensor: str  # the op's output tensor name in the .tflite file
    layer: str | None = None  # the Keras layer it comes from (None: no name maps back)
    rmse_scale: float  # RMSE / output scale; rounding alone gives 0.29
    mean_abs_error: float
    max_abs_error: float
    mse: float  # the op's output mean squared error
    scale: float
    channel_error: float | None = None  # mean over live channels of RMS error / RMS signal


class LayerAnalysis(_Model):
    """Per-layer error of one integer conversion against the float model, worst first."""

    variant: str
    conversion: str  # the conversion analysed, as typed (e.g. int8_per_tensor)
    debug_images: int
    layers: list[LayerError] = Field(default_factory=list)
    named_fraction: float = 0.0  # of the ops, those that carry a Keras layer name


class SearchCandidate(_Model):
    float_layers: int  # how many of the worst-ranked layers stay in float
    search_accuracy: float  # on the held-apart search images
    within_budget: bool
    latency_ms: float | None = None  # median, threads = the run's last thread count
    threads: int | None = None


class SelectiveSearch(_Model):
    """How `selective` chose its float layers (selective.py)."""

    base: str
    budget: float  # accuracy points below the float model allowed on the search images
    search_images: int
    search_source: str  # where they come from (never the validation split)
    float_search_accuracy: float  # the float Keras model on the search images
    quantizable_layers: int  # quantized ops of the base scheme (the analysis' rows)
    candidates: list[SearchCandidate] = Field(default_factory=list)  # in the order tried
    conversions: int = 0  # candidate conversions made (the plain base counts)
    float_layers: list[str] = Field(default_factory=list)  # chosen, by Keras layer name
    float_nodes: list[str] = Field(default_factory=list)  # chosen, TF Lite tensor names
    within_budget: bool = True  # False: no candidate met the budget; the best one was kept
    seconds: float = 0.0  # wall time of the search (analysis included)


# What `quantize --check` found (results.extras["check"]): accuracy per scaling x channel order.


@dataclass
class CheckRow:
    scaling: str
    channel_order: str
    accuracy: float
    declared: bool = False
    only_this_right: int = 0  # McNemar b, against the declared combination
    only_declared_right: int = 0  # McNemar c
    p_value: float | None = None  # one-sided: this combination beats the declared one
    better: bool = False

    @property
    def flags(self) -> str:
        return f"--scaling {self.scaling} --channel-order {self.channel_order}"


@dataclass
class CheckResult:
    images: int
    classes: int
    rows: list[CheckRow]
    chance: float
    chance_p_value: float
    warnings: list[str] = field(default_factory=list)

    @property
    def declared(self) -> CheckRow:
        return next(r for r in self.rows if r.declared)

    @classmethod
    def from_dict(cls, data: dict) -> CheckResult:
        rows = [CheckRow(**r) for r in data["rows"]]
        return cls(data["images"], data["classes"], rows, data["chance"], data["chance_p_value"],
                   list(data.get("warnings", [])))  # fmt: skip

    def to_dict(self) -> dict:
        return {
            "images": self.images, "classes": self.classes, "chance": self.chance,
            "chance_p_value": self.chance_p_value, "warnings": self.warnings,
            "rows": [asdict(r) for r in self.rows],
        }  # fmt: skip


# --- the rows and the run -------------------------------------------------------------------


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
    # Where the run's time went: seconds each stage spent computing (model = training, convert,
    # accuracy, latency, targets, ...; the executor times every miss), plus `reading images`,
    # `report` and `other` (the rest of total_seconds), summed over resumes.
    stage_seconds: dict[str, float] = Field(default_factory=dict)

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
        # Version 1 rows named their model by `source` and `scheme` and carry no spec: they read
        # as they are (views need no spec); a resume gives each its spec (engine/rundir.py).
        raw = {**raw, "schema_version": RESULTS_SCHEMA_VERSION}
    try:
        return RunResults.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise QuantbenchError(f"{displayable(path)} is malformed: {where}: {first['msg']}{more}",
                              tip=_NOT_RESULTS_TIP) from None  # fmt: skip


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
