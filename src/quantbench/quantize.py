"""`quantbench quantize MODEL --data DIR`: bring your own model and photos.

The same pipeline as `quantbench run` (runner.pipeline, evaluate_source, _reference_row)
with the training step replaced by the user's model: every post-training scheme is applied
to it, each variant is scored on DIR against the original model (its row is `keras_float`),
and `--qat-epochs N` adds quantization-aware fine-tuning on DIR's training split.

Everything that can be wrong with the inputs is found before a run directory exists: the
model's format and safety, its input/output shape, the input size, the class names/count.

Evaluation split (docs/byo.md): by default the validation split of DIR, so that calibration
images (and QAT's training images) are never scored; `--eval-split all` scores every image,
for a folder the model never saw in training (calibration images are then among those
scored; calibration uses no labels, so this does not leak them).

This module is also the Python API: `quantbench.quantize(model, data=..., ...)`.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from quantbench import bridge, console
from quantbench.config import REPORTING_FLAGS, RunConfig, flag_keys
from quantbench.errors import ConfigError, ConversionError, DataError, ModelError

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
    "calibration_images",
    "threads",
    "latency_runs",
    "qat_epochs",
    "qat_learning_rate",
    "eval_split",
    "check",
    "unsafe",
    "custom_objects",
    *REPORTING_FLAGS,
)


def build_config(
    model_path: str | Path | None, options: dict[str, Any], config_file: str | Path | None = None,
    assignments: dict[str, Any] | None = None,
) -> tuple[RunConfig, bool]:  # fmt: skip
    """The run's config from the default preset, a config file, and the options/flags.

    Returns (config, image size given): the model's own input size wins unless the user
    named one (then a mismatch is an error rather than a silent override).
    """
    from quantbench import config as config_mod

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        from quantbench.suggest import did_you_mean

        raise ConfigError(
            f"unknown option {unknown[0]!r}{did_you_mean(unknown[0], OPTIONS)}",
            tip="options: " + ", ".join(OPTIONS),
        )
    overrides = {OPTIONS[k]: v for k, v in options.items() if v is not None}
    overrides.update(assignments or {})
    from_file = config_mod.read_config_file(config_file) if config_file else {}
    if model_path is not None:
        overrides["quantize.model"] = str(model_path)
    if "name" not in from_file:
        stem = Path(model_path).stem if model_path is not None else ""
        overrides.setdefault("name", f"quantize-{stem}" if stem else "quantize")
    if overrides.get("qat.epochs"):
        overrides["qat.recipes"] = ["finetune"]
        if overrides.get("convert.schemes"):  # --schemes picks the QAT model's schemes too
            overrides.setdefault("qat.schemes", overrides["convert.schemes"])
    elif "recipes" not in (from_file.get("qat") or {}):
        overrides["qat.recipes"] = []  # the default preset's QAT is `run`'s; here it is opt-in
    cfg = config_mod.resolve("default", config_file, overrides)
    size_given = "data.image_size" in overrides or "image_size" in (from_file.get("data") or {})
    if cfg.data.dir is None:
        raise DataError(
            "quantize needs the photos to evaluate on",
            tip="pass --data DIR (one sub-folder of images per class)",
        )
    if cfg.qat.recipes and cfg.quantize.eval_split == "all":
        raise ConfigError(
            "--qat-epochs trains on the training split, so --eval-split all would score "
            "images the QAT model was trained on",
            tip="drop --eval-split all (the validation split is scored), or drop --qat-epochs",
        )
    return cfg, size_given


# --- classes --------------------------------------------------------------------------------


def read_labels(path: Path) -> list[str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"labels file not found: {path}", tip="one class name per line")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path} names a class twice: {', '.join(duplicates)}",
                        tip="list each class once, in the model's output order")
    if not names:
        raise DataError(f"{path} is empty", tip="one class name per line, in output order")
    return names


def class_order(cfg: RunConfig, num_outputs: int) -> list[str]:
    """The class names in the model's output order; folders checked against them."""
    from quantbench.data import check_class_folders, resolve_data_dir

    root = resolve_data_dir(cfg.data.dir)
    folders = [f.name for f in check_class_folders(root)]
    if cfg.data.labels_file is None:
        order, source = folders, f"{len(folders)} class folders in {root}"
    else:
        order = read_labels(cfg.data.labels_file)
        source = f"{len(order)} class names in {cfg.data.labels_file}"
        missing = [n for n in order if n not in folders]
        extra = [f for f in folders if f not in order]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"no folder for {', '.join(missing)}")
            if extra:
                parts.append(f"folders not in the labels file: {', '.join(extra)}")
            raise DataError(
                f"the labels file and the folders of {root} differ: {'; '.join(parts)}",
                tip="name one sub-folder of DIR after each line of the labels file, exactly",
            )
    if len(order) != num_outputs:
        raise ModelError(
            f"the model has {num_outputs} outputs but there are {source}",
            tip="give DIR one sub-folder per model output (or pass --labels FILE listing the "
            "model's classes in output order)",
        )
    return order


def reorder_classes(dataset, order: list[str]):
    """Relabel a dataset (sorted folder order) to the model's output order."""
    from dataclasses import replace

    if list(dataset.classes) == list(order):
        return dataset
    mapping = np.array([order.index(c) for c in dataset.classes], dtype=np.int32)
    counts = dataset.summary.class_counts
    summary = dataset.summary.model_copy(
        update={"classes": list(order), "class_counts": {c: counts[c] for c in order}}
    )
    return replace(
        dataset, classes=list(order), train_labels=mapping[dataset.train_labels],
        val_labels=mapping[dataset.val_labels], summary=summary,
    )  # fmt: skip


def evaluate_on_all(dataset):
    """--eval-split all: score every image; calibration still comes from the training split."""
    from dataclasses import replace

    summary = dataset.summary.model_copy(
        update={"val_count": dataset.summary.train_count + dataset.summary.val_count}
    )
    return replace(
        dataset,
        val_images=np.concatenate([dataset.train_images, dataset.val_images]),
        val_labels=np.concatenate([dataset.train_labels, dataset.val_labels]),
        val_paths=[],  # the training split's paths are not kept by load_dataset
        summary=summary,
    )


# --- the command ----------------------------------------------------------------------------


def prepare_model(cfg: RunConfig, model=None, size_given: bool = False):
    """Load (or take) the model, check it is an image classifier, fix the image size."""
    from quantbench import loader

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
    from quantbench import loader

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
    console.info(f"flattened the nested model(s) {', '.join(nested)} for QAT")
    return flat


def _check_qat_wraps(model) -> None:
    """tfmot refuses layers it has no quantize config for: say so before any training."""
    from quantbench.qat import quantize as qat_wrap

    try:
        qat_wrap(model)
    except Exception as e:  # noqa: BLE001 - tfmot raises RuntimeError/ValueError/TypeError
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"QAT cannot wrap this model (tensorflow-model-optimization): {first}",
            tip="drop --qat-epochs to benchmark post-training schemes only, or replace the "
            "unsupported layers",
        ) from e


def preflight(cfg: RunConfig, model=None, size_given: bool = False):
    """Every check that needs no images: model, shapes, size, classes, QAT feasibility."""
    loaded, io = prepare_model(cfg, model, size_given)
    order = class_order(cfg, io.num_classes)
    qat_model = None
    if cfg.qat.recipes:
        if loaded.format == "savedmodel":
            raise ModelError(
                "--qat-epochs needs a Keras model; a plain TF SavedModel cannot be trained here",
                tip="pass the model as .keras or .h5 (or a Keras SavedModel)",
            )
        # A Keras 3 model goes through the tf_keras bridge (bridge.py); its failure is recorded.
        qat_model = bridge.qat_source(loaded.model, qat_model_of, _check_qat_wraps)
    return loaded, io, order, qat_model


def run_quantize(cfg: RunConfig, model=None, size_given: bool = False):
    """The `quantize` command: returns (RunResults, run directory)."""
    from quantbench import runner
    from quantbench.data import load_dataset

    loaded, io, order, qat_model = preflight(cfg, model, size_given)
    what = loaded.path or "the in-memory model"
    console.step(
        f"model {what}: {loaded.format}, {cfg.data.image_size} px input, {io.num_classes} classes; "
        f"preprocessing {cfg.data.scaling}, {cfg.data.channel_order}"
    )
    console.step("reading images")
    dataset = reorder_classes(load_dataset(cfg.data), order)
    check = None
    if cfg.quantize.check:
        check = run_check(cfg, loaded.model, dataset)
    if cfg.quantize.eval_split == "all":
        dataset = evaluate_on_all(dataset)

    def evaluate_user_model(ctx, results) -> None:
        results.extras["quantize"] = {
            "model": str(Path(loaded.path).resolve()) if loaded.path else None,
            "format": loaded.format, "keras_version": loaded.keras_version,
            "image_size": cfg.data.image_size,
            "num_classes": io.num_classes, "eval_split": cfg.quantize.eval_split,
            "classes_from": str(cfg.data.labels_file) if cfg.data.labels_file else "folders",
        }  # fmt: skip
        if check is not None:
            results.extras["check"] = check.to_dict()
        reference = runner._reference_row(ctx, loaded.model, "float", 0)
        reference.size_bytes = loaded.size_bytes
        results.variants.append(reference)
        schemes = cfg.convert.scheme_names()
        rows = runner.evaluate_source(ctx, results, loaded.model, "float", schemes)
        if rows and all(r.status == "failed" for r in rows):
            raise ConversionError(
                f"the TF Lite converter cannot convert this model: {rows[0].error}",
                tip="the model uses an op TF Lite has no kernel for; replace that layer with "
                "standard ops (run with -v for details)",
            )
        if qat_model is not None:
            _qat(ctx, results, qat_model)
        from quantbench import stats

        stats.attach(results)  # the same summaries `run` stores, which the report reads

    results, run_dir = runner.pipeline(cfg, "quantize", evaluate_user_model, dataset=dataset)
    if results.training:
        from quantbench.qat import training_table

        console.out.print(training_table(results))
    return results, run_dir


def run_check(cfg: RunConfig, model, dataset):
    from quantbench.check import check_preprocessing, print_check, sample
    from quantbench.runner import preprocessing_of

    images = np.concatenate([dataset.train_images, dataset.val_images])
    labels = np.concatenate([dataset.train_labels, dataset.val_labels])
    images, labels = sample(images, labels, seed=cfg.data.split_seed)
    console.step(f"checking the preprocessing on {len(images)} images (8 combinations)")
    result = check_preprocessing(model, images, labels, len(dataset.classes), preprocessing_of(cfg))
    print_check(result)
    return result


def _qat(ctx, results, flat_model) -> None:
    from quantbench import results as results_mod
    from quantbench import runner

    from quantbench.qat import train_qat

    cfg = ctx.cfg
    flat_model = bridge.the_bridged_model(ctx, results, flat_model)  # Keras 3: checked or failed
    if flat_model is None:
        return
    qat_model, training = train_qat(
        "finetune", float_model=_with_probabilities(flat_model, ctx), dataset=ctx.dataset,
        preprocessing=runner.preprocessing_of(cfg), cfg=cfg, repeat=0, seed=cfg.train.seed,
    )  # fmt: skip
    results.training.append(training)
    source = "qat_finetune"
    results.variants.append(runner._reference_row(ctx, qat_model, source, 0))
    results_mod.save(results, ctx.run_dir)
    runner.evaluate_source(ctx, results, qat_model, source, list(cfg.qat.schemes))


def _with_probabilities(model, ctx):
    """QAT trains with a probability loss: a model that outputs logits gets a Softmax on top
    (top-1, and so accuracy and agreement, are unchanged)."""
    import tf_keras as keras

    probe = model.predict_on_batch(ctx.val_inputs[:8])
    if np.all(probe >= -1e-6) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3):
        return model
    console.info("the model outputs logits: adding a Softmax layer for QAT")
    return keras.Model(model.input, keras.layers.Softmax(name="qat_softmax")(model.output))


# --- the Python API -------------------------------------------------------------------------


def quantize(model, data: str | Path | None = None, schemes: list[str] | str | None = None,
             *, config: str | Path | None = None, **options):  # fmt: skip
    """Quantize a Keras model (a path, or an in-memory tf_keras Model) with every scheme and
    evaluate each variant on the photos in `data`. Returns (results DataFrame, run dir).

    Options are the CLI's flags with underscores: labels, image_size, scaling, channel_order,
    eval_split, check, qat_epochs, unsafe, custom_objects, threads, latency_runs, output_dir, ...
    """
    import io as io_mod

    import pandas as pd

    from quantbench import quiet
    from quantbench.results import to_csv

    if isinstance(schemes, str):
        schemes = [s.strip() for s in schemes.split(",") if s.strip()]
    if isinstance(options.get("threads"), int):
        options["threads"] = [options["threads"]]
    in_memory = not isinstance(model, (str, Path))
    cfg, size_given = build_config(
        None if in_memory else model, {**options, "data": data, "schemes": schemes}, config
    )
    quiet.import_tensorflow()
    results, run_dir = run_quantize(cfg, model if in_memory else None, size_given)
    return pd.read_csv(io_mod.StringIO(to_csv(results))), run_dir


class _CallableModule(types.ModuleType):
    # `quantbench.quantize` is both this module and the function the package exports; once the
    # module is imported Python binds the module to that name, so calling it must work.
    def __call__(self, *args, **kwargs):
        return quantize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
