"""The parts of a run's results: training records, latency figures, and what a variant's row
holds beyond its headline figures (the paired comparison with the reference, deployment
targets, the weights in the file, the per-layer analysis, the selective search). results.py
holds the rows, the run, and reading and writing them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
    figures: dict[str, float | int | str | None] = Field(default_factory=dict)  # arena_bytes, ...
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
