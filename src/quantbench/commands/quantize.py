"""`quantbench quantize MODEL --data DIR`: bring your own model and photos.

The same pipeline as `quantbench run` (runner.pipeline, evaluate_source, _reference_row)
with the training step replaced by the user's model: every post-training scheme is applied
to it, each variant is scored on DIR against the original model (its row is `keras_float`),
and `--qat-epochs N` adds quantization-aware fine-tuning on DIR's training split.

Everything that can be wrong with the inputs is found before a run directory exists: the
model's format and safety, its input/output shape, the input size, the class names/count.

Evaluation split (docs/byo.md): by default (`rest`) a fixed, seeded slice of DIR calibrates
(`--calibration-images`, never more than a third of the photos) and every other photo is
scored (data.calibration_split): a 300-photo folder scores 200 photos, not a 15% validation
split's 45. With `--qat-epochs` the default is the validation split, since QAT trains on the
rest. `--eval-split all` scores every image (calibration images among them; calibration uses
no labels, so this does not leak them).

A float32 `.tflite` is taken too (`TfliteModel`): the file is the `float32` row and the
reference the other rows are compared with (there is no Keras model, so no `keras_float`
row); the schemes that start from a .tflite (AI Edge Quantizer's `aeq` recipes, all six by
default) are made from it and every measurement runs as for a Keras model. The input size
comes from the file's input tensor (or --image-size when it has none), the scaling from
--scaling. What needs a Keras model (the converter's schemes, QAT and the other transforms)
is listed once as not applicable. A .tflite that is already quantized is refused.

The Python API (`quantbench.quantize(model, data=..., ...)`, api.py) calls it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.ml import bridge
from quantbench.ml.classes import class_order, evaluate_on_all, reorder_classes
from quantbench.engine.context import BaseSource, silent
from quantbench.core.config import RunConfig
from quantbench.engine.configure import MEASURING_FLAGS, REPORTING_FLAGS, flag_keys
from quantbench.core.errors import ConfigError, ConversionError, DataError, ModelError, first_line

# API keywords (the CLI's flags use the same names), each setting config.FLAG_KEYS' key.
OPTIONS = flag_keys(
    "data",
    "labels",
    "image_size",
    "scaling",
    "channel_order",
    "validation_split",
    "split_seed",
    "max_images_per_class",
    "schemes",
    "transforms",
    "calibration_images",
    *MEASURING_FLAGS,
    "qat_epochs",
    "qat_learning_rate",
    "eval_split",
    "check",
    "unsafe",
    "custom_objects",
    *REPORTING_FLAGS,
)


def quantize_overrides(
    model_path: str | Path | None, options: dict[str, Any], config_file: str | Path | None = None,
    assignments: dict[str, Any] | None = None, *, defaults: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """(the dotted config keys the options set, the config file's contents). With
    `defaults=False`, only what the user asked for: not quantize's own defaults (the run name,
    no transforms), which a resumed run takes from its config."""
    from quantbench.engine import configure as config_mod

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        from quantbench.core.suggest import did_you_mean

        raise ConfigError(
            f"unknown option {unknown[0]!r}{did_you_mean(unknown[0], OPTIONS)}",
            tip="options: " + ", ".join(OPTIONS),
        )
    overrides = {OPTIONS[k]: v for k, v in options.items() if v is not None}
    overrides.update(assignments or {})
    from_file = config_mod.read_config_file(config_file) if config_file else {}
    if model_path is not None:
        overrides["quantize.model"] = str(model_path)
    if "name" not in from_file and defaults:
        stem = Path(model_path).stem if model_path is not None else ""
        overrides.setdefault("name", f"quantize-{stem}" if stem else "quantize")
    if overrides.get("qat.epochs"):
        overrides["qat.recipes"] = ["finetune"]
        if overrides.get("convert.schemes"):  # --schemes picks the QAT model's schemes too
            overrides.setdefault("qat.schemes", overrides["convert.schemes"])
    elif defaults and "transforms" not in overrides and "transforms" not in from_file and \
            "recipes" not in (from_file.get("qat") or {}):
        overrides["transforms"] = []  # the default preset's QAT is `run`'s; here it is opt-in
    split_given = "quantize.eval_split" in overrides or "eval_split" in (from_file.get("quantize") or {})
    trains = overrides.get("qat.recipes") or overrides.get("transforms") or \
        from_file.get("transforms") or (from_file.get("qat") or {}).get("recipes")
    if defaults and trains and not split_given:
        overrides["quantize.eval_split"] = "validation"  # transforms train on the other photos
    return overrides, from_file


def build_config(
    model_path: str | Path | None, options: dict[str, Any], config_file: str | Path | None = None,
    assignments: dict[str, Any] | None = None,
) -> tuple[RunConfig, bool]:  # fmt: skip
    """The run's config from the default preset, a config file, and the options/flags.

    Returns (config, image size given): the model's own input size wins unless the user
    named one (then a mismatch is an error rather than a silent override).
    """
    from quantbench.engine import configure as config_mod

    overrides, from_file = quantize_overrides(model_path, options, config_file, assignments)
    cfg = config_mod.resolve("default", config_file, overrides)
    size_given = "data.image_size" in overrides or "image_size" in (from_file.get("data") or {})
    if cfg.data.dir is None:
        raise DataError(
            "quantize needs the photos to evaluate on",
            tip="pass --data DIR (one sub-folder of images per class)",
        )
    if cfg.transforms and cfg.quantize.eval_split != "validation":
        raise ConfigError(
            f"--qat-epochs trains on the training split, so --eval-split "
            f"{cfg.quantize.eval_split} would score images the QAT model was trained on",
            tip=f"drop --eval-split {cfg.quantize.eval_split} (the validation split is scored), "
            "or drop --qat-epochs",
        )
    return cfg, size_given


# --- the command ----------------------------------------------------------------------------


def prepare_model(cfg: RunConfig, model=None, size_given: bool = False):
    """Load (or take) the model, check it is an image classifier, fix the image size."""
    from quantbench.ml import loader

    if model is None:
        if cfg.quantize.model is None:
            raise ModelError("no model given", tip="quantbench quantize MODEL --data DIR")
        loaded = loader.load_model(
            cfg.quantize.model, unsafe=cfg.quantize.unsafe,
            custom_objects=cfg.quantize.custom_objects,
        )  # fmt: skip
    else:
        loaded = loader.in_memory(model)  # a tf_keras or Keras 3 Model
    io = loader.inspect_io(loaded.model)
    cfg.data.image_size = loader.resolve_image_size(io, cfg.data.image_size if size_given else None)
    loaded.model = loader.fix_input_size(loaded.model, cfg.data.image_size)
    return loaded, io


def qat_model_of(model):
    """The model QAT can wrap: flat (nested sub-models inlined), checked to predict the same."""
    from quantbench.ml import loader

    nested = loader.nested_models(model)
    if not nested:
        return model
    limitation = (
        f"QAT cannot wrap this model: it nests the model(s) {', '.join(nested)} as layers "
        "(tensorflow-model-optimization's quantize_model refuses nested models)"
    )
    tip = (
        "build the model flat: put the head on the trunk's output, e.g. "
        "keras.Model(base.input, head(base.output)), instead of calling base as a layer"
    )
    try:
        flat = loader.flatten(model)
    except ModelError as e:
        raise ModelError(f"{limitation}; flattening failed: {e.message}", tip=tip) from e
    probe = np.random.default_rng(0).uniform(-1, 1, (2, *model.input_shape[1:])).astype(np.float32)
    if not np.allclose(model.predict_on_batch(probe), flat.predict_on_batch(probe), atol=1e-4):
        raise ModelError(f"{limitation}; the flattened copy predicts differently", tip=tip)
    return flat


def _check_qat_wraps(model) -> None:
    """tfmot refuses layers it has no quantize config for: say so before any training."""
    from quantbench.ml.qat import quantize as qat_wrap

    try:
        qat_wrap(model)
    except Exception as e:  # noqa: BLE001 - tfmot raises RuntimeError/ValueError/TypeError
        first = first_line(e)
        raise ModelError(
            f"QAT cannot wrap this model (tensorflow-model-optimization): {first}",
            tip="drop --qat-epochs to benchmark post-training schemes only, or replace the "
            "unsupported layers",
        ) from e


def preflight(cfg: RunConfig, model=None, size_given: bool = False):
    """Every check that needs no images: model, shapes, size, classes, QAT feasibility."""
    loaded, io = prepare_model(cfg, model, size_given)
    order = class_order(cfg, io.num_classes)
    trainable = None
    if cfg.transforms:
        if loaded.format == "savedmodel":
            raise ModelError(
                "--qat-epochs (and every transform) needs a Keras model; a plain TF SavedModel "
                "cannot be trained here",
                tip="pass the model as .keras or .h5 (or a Keras SavedModel)",
            )
        # A Keras 3 model goes through the tf_keras bridge (bridge.py); its failure is recorded.
        trainable = bridge.qat_source(loaded.model, qat_model_of, _check_qat_wraps)
    return loaded, io, order, trainable


# --- a float .tflite -----------------------------------------------------------------------


def is_tflite(path: str | Path | None) -> bool:
    return path is not None and not Path(path).is_dir() and Path(path).suffix.lower() == ".tflite"


def inspect_tflite(path: Path):
    """A float32 image classifier .tflite: (batch, H, W, 3) float32 in, (batch, classes) out,
    not quantized (AEQ would keep the quantized parts): its ModelIO (H, W None when the file
    takes any size), or a ModelError."""
    from quantbench.ml.loader import ModelIO
    from quantbench.techniques import aeq

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"model not found: {path}", tip="pass a float32 .tflite file")
    aeq.refuse_quantized(path)  # an already quantized (or float16) file: one clear error
    from quantbench.measure.litert import open_interpreter

    try:
        interpreter = open_interpreter(path, threads=1, xnnpack=False)
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"LiteRT cannot load {path.name}: {first_line(e)}",
                         tip="pass a .tflite written by the TF Lite converter") from None  # fmt: skip
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path.name} has {len(inputs)} inputs and {len(outputs)} outputs; an "
                         f"image classifier has one of each", tip="pass a model with one input")  # fmt: skip
    signature = tuple(int(d) for d in inputs[0].get("shape_signature", inputs[0]["shape"]))
    if len(signature) != 4 or signature[-1] != 3 or np.dtype(inputs[0]["dtype"]) != np.float32:
        raise ModelError(
            f"not an image classifier input: quantbench needs (batch, height, width, 3) float32 "
            f"images, {path.name} takes {np.dtype(inputs[0]['dtype']).name} {list(signature)}",
            tip="pass a channels-last float32 .tflite of an image classifier")  # fmt: skip
    out_shape = tuple(int(d) for d in outputs[0]["shape"])
    if len(out_shape) != 2 or out_shape[-1] < 2:
        raise ModelError(f"not a classifier output: quantbench needs (batch, classes) scores, "
                         f"{path.name} returns shape {list(out_shape)}",
                         tip="end the model with a Dense(num_classes) layer")  # fmt: skip
    height, width = (None if d < 0 else d for d in signature[1:3])
    return ModelIO(height, width, 3, out_shape[-1])


class TfliteModel(BaseSource):
    """`quantize`'s base for a float32 .tflite: the file is the float32 row (supplied, not
    converted) and the reference; only schemes that start from a .tflite apply to it."""

    label = "your .tflite"
    cacheable = False  # it is a file already; its key is its content
    trains = False

    def __init__(self, path: Path):
        self.path = Path(path).expanduser().resolve()
        self.not_applicable: list[str] = []
        self._key: str | None = None

    def key_params(self, repeat: int) -> dict[str, Any]:
        if self._key is None:
            import hashlib

            self._key = hashlib.sha256(self.path.read_bytes()).hexdigest()[:32]
        return {"kind": "tflite", "model": self._key}

    def produce(self, ctx, repeat: int):
        raise ModelError(f"{self.path.name} is a .tflite: there is no Keras model to load")

    def supplied_file(self, scheme, repeat: int) -> Path | None:
        from quantbench.techniques.schemes import FLOAT_SCHEME, SCHEMES

        return self.path if scheme == SCHEMES.spec(FLOAT_SCHEME) else None

    def variants(self, specs: list) -> list:
        """The float32 row first (the file), then the schemes made from a .tflite; what needs
        a Keras model is left out and named in `not_applicable` (the Keras reference row
        aside: there is no Keras model, and the float32 row is the reference)."""
        from quantbench.core.specs import VariantSpec
        from quantbench.techniques.schemes import FLOAT_SCHEME, SCHEMES

        kept = [VariantSpec(scheme=SCHEMES.spec(FLOAT_SCHEME), repeat=0)]
        dropped: list[str] = []
        for spec in specs:
            if spec in kept or (spec.scheme is None and not spec.transforms):
                continue
            if spec.transforms:
                dropped += [t.text() for t in spec.transforms]
            elif SCHEMES.get(spec.scheme.name).source == "tflite":
                kept.append(spec)
            else:
                dropped.append(spec.scheme.text())
        self.not_applicable = list(dict.fromkeys(dropped))
        return kept


class _LiteRTModel:
    """A .tflite seen as a Keras model's `predict_on_batch` (for --check)."""

    def __init__(self, path: Path):
        self.path = path

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        from quantbench.measure.evaluate import predict_tflite

        return predict_tflite(self.path, np.asarray(x, np.float32), threads=1, batch_size=len(x))


def tflite_defaults(cfg: RunConfig) -> None:
    """No scheme named: the float32 file and every scheme made from a .tflite, each with the
    variants its registry entry lists (AEQ: its six named recipes)."""
    from quantbench.techniques.schemes import FLOAT_SCHEME, SCHEMES

    if cfg.convert.schemes is None:
        cfg.convert.schemes = [SCHEMES.spec(FLOAT_SCHEME)] + [
            spec for entry in SCHEMES if entry.source == "tflite" for spec in entry.default_specs()]


def run_quantize_tflite(cfg: RunConfig, size_given: bool = False, *,
                        resume_dir: Path | None = None, use_cache: bool = True, resources=None,
                        emit=silent):  # fmt: skip
    """`quantize` for a float32 .tflite: returns (RunResults, run directory)."""
    from quantbench.commands import run as runner
    from quantbench.engine.context import Resources
    from quantbench.ml import loader
    from quantbench.ml.data import load_dataset

    resources = resources or Resources.detect()
    path = Path(cfg.quantize.model).expanduser()
    io = inspect_tflite(path)
    cfg.data.image_size = loader.resolve_image_size(io, cfg.data.image_size if size_given else None)
    order = class_order(cfg, io.num_classes)
    tflite_defaults(cfg)
    source = TfliteModel(path)
    emit("step", f"model {path}: float32 .tflite, {cfg.data.image_size} px input, "
                 f"{io.num_classes} classes; preprocessing {cfg.data.scaling}, {cfg.data.channel_order}")
    dataset, check = _photos(cfg, order, _LiteRTModel(source.path), resources, emit)

    def describe(ctx, results) -> None:
        results.extras["quantize"] = {
            "model": str(source.path), "format": "tflite", "keras_version": None,
            "image_size": cfg.data.image_size, "num_classes": io.num_classes,
            "eval_split": cfg.quantize.eval_split,
            "classes_from": str(cfg.data.labels_file) if cfg.data.labels_file else "folders",
        }  # fmt: skip
        if source.not_applicable:
            why = "they need a Keras model; a .tflite takes only the schemes made from a .tflite"
            results.extras["quantize"].update(not_applicable=source.not_applicable,
                                              not_applicable_reason=why)  # fmt: skip
            emit("warn", f"not applicable to a .tflite ({why}): {', '.join(source.not_applicable)}")
        if check is not None:
            results.extras["check"] = check.to_dict()

    def require_the_file(ctx, results) -> None:
        from quantbench.techniques.schemes import FLOAT_SCHEME

        row = results.variant(FLOAT_SCHEME, 0)
        if row is not None and row.status == "failed":
            raise ModelError(f"LiteRT cannot run {path.name}: {row.error}",
                             tip="check that the file runs in LiteRT (ai_edge_litert.interpreter)")  # fmt: skip

    return runner.orchestrate(
        cfg, "quantize", source, dataset=dataset, resume_dir=resume_dir, use_cache=use_cache,
        resources=resources, emit=emit, before=describe, after=require_the_file,
    )  # fmt: skip


def _eval_split(cfg: RunConfig, dataset):
    if cfg.quantize.eval_split == "all":
        return evaluate_on_all(dataset)
    if cfg.quantize.eval_split == "rest":
        from quantbench.ml.data import calibration_split

        return calibration_split(dataset, cfg.convert.calibration_images, cfg.data.split_seed)
    return dataset


class UserModel(BaseSource):
    """`quantize`'s base model: the user's own, scored and converted as it is."""

    label = "your model"
    cacheable = False  # it is a file already; its key is its content
    trains = False

    def __init__(self, loaded, trainable):
        self.loaded, self.trainable = loaded, trainable
        self._key: str | None = None

    def key_params(self, repeat: int) -> dict[str, Any]:
        if self._key is None:
            from quantbench.store import data_fingerprint

            # Its weights and its architecture (a tf_keras model's config; a Keras 3 adapter
            # has its wrapped model's), so the same model from any path is one key.
            model = self.loaded.model
            weights = [np.asarray(v) for v in model.variables]
            inner = getattr(model, "keras_model", model)
            try:
                config = inner.get_config()
            except (AttributeError, NotImplementedError):  # a plain SavedModel's signature
                config = type(inner).__name__
            text = json.dumps([config, str(model.input_shape)], sort_keys=True, default=str)
            self._key = data_fingerprint([*weights, np.frombuffer(text.encode(), np.uint8)])
        return {"kind": "user", "model": self._key}

    def produce(self, ctx, repeat: int):
        return self.loaded.model, None

    def for_transforms(self, model, ctx, results):
        # A Keras 3 model: its tf_keras rebuild, checked on the photos (or a ModelError).
        trainable = bridge.the_bridged_model(ctx, results, self.trainable)
        return _with_probabilities(trainable, ctx)

    def describe_reference(self, row) -> None:
        row.size_bytes = self.loaded.size_bytes


def run_quantize(cfg: RunConfig, model=None, size_given: bool = False, *,
                 resume_dir: Path | None = None, use_cache: bool = True, resources=None,
                 emit=silent):  # fmt: skip
    """The `quantize` command: returns (RunResults, run directory)."""
    from quantbench.commands import run as runner
    from quantbench.ml.data import load_dataset
    from quantbench.engine.context import Resources

    if model is None and is_tflite(cfg.quantize.model):
        return run_quantize_tflite(cfg, size_given, resume_dir=resume_dir, use_cache=use_cache,
                                   resources=resources, emit=emit)  # fmt: skip
    resources = resources or Resources.detect()

    loaded, io, order, trainable = preflight(cfg, model, size_given)
    what = loaded.path or "the in-memory model"
    emit("step", f"model {what}: {loaded.format}, {cfg.data.image_size} px input, "
                 f"{io.num_classes} classes; preprocessing {cfg.data.scaling}, {cfg.data.channel_order}")
    dataset, check = _photos(cfg, order, loaded.model, resources, emit)

    def describe(ctx, results) -> None:
        results.extras["quantize"] = {
            "model": str(Path(loaded.path).resolve()) if loaded.path else None,
            "format": loaded.format, "keras_version": loaded.keras_version,
            "image_size": cfg.data.image_size,
            "num_classes": io.num_classes, "eval_split": cfg.quantize.eval_split,
            "classes_from": str(cfg.data.labels_file) if cfg.data.labels_file else "folders",
        }  # fmt: skip
        if check is not None:
            results.extras["check"] = check.to_dict()

    def require_a_conversion(ctx, results) -> None:
        rows = [r for r in results.rows(0) if r.kind == "tflite" and r.source == "float"]
        if rows and all(r.status == "failed" for r in rows):
            raise ConversionError(
                f"the TF Lite converter cannot convert this model: {rows[0].error}",
                tip="the model uses an op TF Lite has no kernel for; replace that layer with "
                "standard ops (run with -v for details)",
            )

    return runner.orchestrate(
        cfg, "quantize", UserModel(loaded, trainable), dataset=dataset, resume_dir=resume_dir,
        use_cache=use_cache, resources=resources, emit=emit, before=describe,
        after=require_a_conversion,
    )  # fmt: skip


def _photos(cfg: RunConfig, order: Any, model: Any, resources: Any, emit: Any):
    """The photos in the model's class order, the preprocessing check (`--check`) on them, and
    the split that is scored: (dataset, check or None)."""
    from quantbench.ml.data import load_dataset

    emit("step", "reading images")
    dataset = reorder_classes(load_dataset(cfg.data, emit, readers=2 * resources.cores), order)
    check = None
    if cfg.quantize.check:
        emit("step", "checking the preprocessing (8 combinations)")
        check = run_check(cfg, model, dataset)
        for warning in check.warnings:
            emit("warn", warning)
    dataset = _eval_split(cfg, dataset)
    emit("info", f"scoring {len(dataset.val_labels)} photos: {dataset.summary.eval_split}")
    return dataset, check


def run_check(cfg: RunConfig, model, dataset):
    from quantbench.ml.check import check_preprocessing, sample
    from quantbench.ml.preprocess import Preprocessing

    images = np.concatenate([dataset.train_images, dataset.val_images])
    labels = np.concatenate([dataset.train_labels, dataset.val_labels])
    images, labels = sample(images, labels, seed=cfg.data.split_seed)
    preprocessing = Preprocessing(cfg.data.image_size, cfg.data.scaling, cfg.data.channel_order)
    return check_preprocessing(model, images, labels, len(dataset.classes), preprocessing)


def _with_probabilities(model, ctx):
    """QAT trains with a probability loss: a model that outputs logits gets a Softmax on top
    (top-1, and so accuracy and agreement, are unchanged)."""
    import tf_keras as keras

    probe = model.predict_on_batch(ctx.val_inputs[:8])
    if np.all(probe >= -1e-6) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3):
        return model
    ctx.emit("info", "the model outputs logits: adding a Softmax layer for QAT")
    return keras.Model(model.input, keras.layers.Softmax(name="qat_softmax")(model.output))


# --- the Python API -------------------------------------------------------------------------
