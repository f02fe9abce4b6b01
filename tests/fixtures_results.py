"""Constructed RunResults for report, recommendation and tracking tests: no TensorFlow, no training.

The figures are shaped like a real tf_flowers run (sizes, accuracies, latencies in the right
ranges), so the report renders what a user would see.
"""

from __future__ import annotations

from pathlib import Path

from quantbench.core import results as results_mod
from quantbench.core.results import (
    DataSummary,
    Environment,
    EpochRecord,
    LatencyResult,
    RunResults,
    SkippedFile,
    TrainingResult,
    VariantResult,
    WeightStats,
)

FLOWERS = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]

# variant -> (scheme, policy, size_bytes, accuracy, agreement, latency ms at 1 thread)
ROWS = {
    "float32": ("float32", "float32 weights and activations", 1_720_000, 0.872, 1.0, 6.1),
    "dynamic_range": (
        "dynamic_range",
        "int8 weights, float activations",
        560_000,
        0.868,
        0.985,
        5.2,
    ),
    "float16": ("float16", "float16 weights", 880_000, 0.872, 0.999, 6.3),
    "int8": ("int8", "int8 weights and activations, float I/O", 610_000, 0.861, 0.962, 2.9),
    "int8_io": ("int8_io", "int8 everywhere, int8 I/O", 605_000, 0.858, 0.955, 2.8),
}


def latency(ms_1t: float, threads=(1, 2)) -> list[LatencyResult]:
    return [
        LatencyResult(
            threads=t,
            runs=50,
            warmup_runs=5,
            median_ms=ms_1t / (1 + 0.6 * (t - 1)),
            mean_ms=ms_1t * 1.05,
            p90_ms=ms_1t * 1.2,
        )  # fmt: skip
        for t in threads
    ]


def confusion(classes: list[str], accuracy: float, per_class: int = 20) -> list[list[int]]:
    n = len(classes)
    matrix = []
    for i in range(n):
        right = round(per_class * accuracy)
        row = [0] * n
        row[i] = right
        row[(i + 1) % n] += per_class - right
        matrix.append(row)
    return matrix


def epochs(n: int, start_acc: float, seconds: float) -> list[EpochRecord]:
    return [
        EpochRecord(
            epoch=i + 1,
            loss=1.4 / (i + 1),
            accuracy=min(0.99, start_acc + 0.08 * i),
            val_loss=1.5 / (i + 1) + 0.05,
            val_accuracy=min(0.95, start_acc + 0.07 * i),
            seconds=seconds * (1.6 if i == 0 else 1.0),
        )  # fmt: skip
        for i in range(n)
    ]


def make_results(
    classes: list[str] | None = None,
    name: str = "flowers-smoke",
    repeats: int = 1,
    qat: bool = True,
    failed: bool = True,
    article_comparison: bool = True,
    threads=(1, 2),
    photos: bool = False,
) -> RunResults:
    """photos=True adds what a run now stores per photo: top-1 predictions, the labels, and
    from them each row's 95% intervals and paired comparison with keras_float."""
    classes = list(classes or FLOWERS)
    variants: list[VariantResult] = []
    training: list[TrainingResult] = []
    for repeat in range(repeats):
        jitter = 0.004 * repeat
        training.append(TrainingResult(name="float", seed=1 + repeat, repeat=repeat,
                                       epochs=epochs(5, 0.55, 12.0), total_seconds=67.2,
                                       train_images=3120))  # fmt: skip
        variants.append(VariantResult(
            variant="keras_float", policy="Keras (reference)", kind="keras", repeat=repeat,
            path="model.keras" if repeat == 0 else None, size_bytes=5_400_000,
            accuracy=0.874 - jitter, agreement=1.0, eval_images=550,
            per_class_accuracy={c: 0.874 for c in classes},
            confusion=confusion(classes, 0.874),
        ))  # fmt: skip
        for variant, (scheme, policy, size, acc, agree, ms) in ROWS.items():
            acc -= jitter
            variants.append(VariantResult(
                variant=variant, scheme=scheme, policy=policy, repeat=repeat,
                path=f"{variant}.tflite" if repeat == 0 else f"repeat-{repeat}/{variant}.tflite",
                size_bytes=size, convert_seconds=3.2, accuracy=acc, agreement=agree,
                eval_images=550, input_dtype="int8" if variant == "int8_io" else "float32",
                per_class_accuracy={c: max(0.0, acc - 0.03 * k) for k, c in enumerate(classes)},
                confusion=confusion(classes, acc), latency=latency(ms, threads),
            ))  # fmt: skip
        variants.append(VariantResult(
            variant="optimize_for_size", scheme="optimize_for_size", policy="deprecated alias",
            repeat=repeat, status="identical", identical_to="dynamic_range",
            path="optimize_for_size.tflite", size_bytes=560_000, accuracy=0.868 - jitter,
            latency=latency(5.2, threads), notes=["byte-identical to dynamic_range: the scheme had no effect"],
        ))  # fmt: skip
        if failed:
            variants.append(VariantResult(
                variant="int16x8", scheme="int16x8", policy="int16 activations, int8 weights",
                repeat=repeat, status="failed", convert_seconds=1.1,
                error="RuntimeError: Quantization to 16x8-bit not yet supported for op: 'MEAN'",
            ))  # fmt: skip
        if qat:
            training.append(TrainingResult(name="qat_finetune", recipe="finetune", seed=1 + repeat,
                                           repeat=repeat, epochs=epochs(2, 0.8, 30.0),
                                           total_seconds=78.0, train_images=3120))  # fmt: skip
            variants.append(VariantResult(
                variant="qat_finetune_int8", source="qat_finetune", scheme="int8",
                policy="int8 weights and activations, float I/O", repeat=repeat,
                path="qat_finetune_int8.tflite", size_bytes=612_000, convert_seconds=4.0,
                accuracy=0.869 - jitter, agreement=0.97, eval_images=550,
                per_class_accuracy={c: 0.869 for c in classes},
                confusion=confusion(classes, 0.869), latency=latency(3.0, threads),
            ))  # fmt: skip
    variants[3].notes.append(
        "float16 is no faster than float32: LiteRT dequantizes weights on load"
    )
    results = RunResults(
        name=name, status="complete", created="2026-11-25T22:00:00+00:00",
        finished="2026-11-25T22:09:00+00:00", total_seconds=540.0,
        config={"name": name, "preset": "smoke", "data": {"image_size": 64, "dir": None},
                "train": {"epochs": 5, "learning_rate": 0.001},
                "evaluate": {"threads": list(threads)},
                "recommend": {"max_accuracy_drop": 1.0, "max_size_mb": None,
                              "max_latency_ms": None, "objective": "size"}},
        environment=Environment(quantbench="0.1.0", python="3.11.2", platform="Linux-x86_64",
                                cpu_model="Test CPU @ 2.0GHz", cpu_cores=2,
                                tensorflow="2.21.0", litert="2.3.0"),
        data=DataSummary(source="/data/flower_photos", classes=classes,
                         class_counts={c: 600 + 10 * k for k, c in enumerate(classes)},
                         train_count=3120, val_count=550, split_seed=42, validation_split=0.15,
                         image_size=64, skipped=[SkippedFile(path="roses/broken.jpg",
                                                             reason="cannot identify image file")],
                         duplicate_groups=2),
        training=training, variants=variants,
    )  # fmt: skip
    if photos:
        add_photos(results)
    if repeats > 1:
        from quantbench.analysis.stats import summarize

        results.extras["summary"] = summarize(results)
    if article_comparison:
        results.extras["article_comparison"] = [
            {"variant": "int8", "metric": "size MB", "article": 0.62, "ours": 0.61, "verdict": "reproduced"},
            {"variant": "float16", "metric": "accuracy %", "article": 88.0, "ours": 87.2,
             "verdict": "not reproduced"},
        ]  # fmt: skip
    return results


def make_run_dir(path: Path, results: RunResults | None = None) -> Path:
    """A run directory on disk: results.json plus small fake .tflite files for the ok rows."""
    results = results or make_results()
    path.mkdir(parents=True, exist_ok=True)
    for v in results.variants:
        if v.path and v.path.endswith(".tflite"):
            target = path / v.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"TFL3" + v.variant.encode() * 8)
    results_mod.save(results, path)
    return path


def add_photos(results: RunResults, n: int = 550) -> RunResults:
    """Per-photo predictions matching each ok row's accuracy (the first round(acc * n) photos
    right, shifted by the row's index so variants disagree on a few), then scored like a run."""
    import numpy as np

    from quantbench.measure.evaluate import score
    from quantbench.core.results import encode_classes

    k = len(results.data.classes)
    labels = np.arange(n) % k
    results.data.eval_labels = encode_classes(labels)
    for repeat in range(results.repeats):
        reference = None
        for i, v in enumerate(results.rows(repeat)):
            if v.accuracy is None or v.status == "failed":
                continue
            right = np.roll(np.arange(n) < round(v.accuracy * n), 3 * i)
            predicted = np.where(right, labels, (labels + 1) % k)
            if reference is None:
                reference = predicted
            s = score(predicted, labels, results.data.classes, reference)
            v.eval_images = n
            for key, value in s.uncertainty().items():
                setattr(v, key, value)
    return results


# A default run as it now looks: every scheme on the float model and on its QAT fine-tune, the
# integer files clustered near 1.3 MB, and all four targets judged for every converted file.
# variant suffix -> (scheme, policy, size_bytes, accuracy, agreement, latency ms at 1 thread)
WIDE_ROWS = {
    "float32": ("float32", "float32 weights and activations", 5_120_000, 0.912, 1.0, 14.2),
    "dynamic_range": ("dynamic_range", "int8 weights, float activations", 1_330_000, 0.909,
                      0.988, 11.8),
    "float16": ("float16", "float16 weights", 2_590_000, 0.912, 0.999, 14.6),
    "int8": ("int8", "int8 weights and activations, float I/O", 1_352_000, 0.904, 0.971, 6.1),
    "int8_io": ("int8_io", "int8 everywhere, int8 I/O", 1_347_000, 0.903, 0.969, 5.9),
    "int16x8": ("int16x8", "int16 activations, int8 weights", 1_371_000, 0.908, 0.985, 61.0),
    "optimize_for_size": ("optimize_for_size", "deprecated alias of dynamic range", 1_330_400,
                          0.909, 0.988, 11.9),
    "optimize_for_latency": ("optimize_for_latency", "deprecated alias of dynamic range",
                             1_330_800, 0.9085, 0.987, 11.7),
}  # fmt: skip
TARGET_NAMES = ("mcu", "edgetpu", "gpu", "integer_only")


def targets_for(scheme: str, size_bytes: int, accuracy: float) -> dict:
    """The four targets' verdicts on a file of this scheme, in the checks' own words."""
    from quantbench.core.results import TargetResult

    integer = scheme in ("int8", "int8_io")
    if integer:
        arena = 322_560 + (size_bytes % 7) * 1024
        mcu = TargetResult(target="mcu", ok=True, reasons=[
            f"runs on TFLM in a {arena / 1024:.0f} KiB arena; accuracy {accuracy * 100 - 0.2:.1f}% "
            "on TFLM's kernels"], figures={"arena_bytes": arena, "accuracy": accuracy - 0.002,
                                           "agreement_litert": 0.996})  # fmt: skip
    elif scheme == "int16x8":
        mcu = TargetResult(target="mcu", ok=None, reasons=[
            "TFLM worker timed out after 900 s (int16x8 reference kernels)"])
    elif scheme in ("float32", "float16"):
        mcu = TargetResult(target="mcu", ok=False, reasons=[
            f"model {size_bytes / 1024:.0f} KiB > flash budget 1024 KiB",
            "TFLM: float models run, but 4x the arena: arena 1410 KiB > RAM budget 512 KiB"])
    else:
        mcu = TargetResult(target="mcu", ok=False, reasons=[
            "TFLM: Hybrid models are not supported on TFLite Micro."])
    if integer:
        edgetpu = TargetResult(target="edgetpu", ok=True, reasons=[
            "meets the published requirements; QUANTIZE x1, DEQUANTIZE x1 at the edges"])
    else:
        edgetpu = TargetResult(target="edgetpu", ok=False, reasons=[
            "not fully 8-bit: float ops CONV_2D x35, DEPTHWISE_CONV_2D x17, ADD x10, MEAN x1",
            "tensors of type float32 (the Edge TPU takes 8-bit integers)"])
    gpu = (TargetResult(target="gpu", ok=True, reasons=["all 66 ops run on the GPU delegate"])
           if scheme in ("float32", "float16") else
           TargetResult(target="gpu", ok=False, reasons=[
               "GPU delegate: 35 ops fall back to the CPU (CONV_2D: Not supported op type "
               "with quantized weights)"]))  # fmt: skip
    integer_only = (TargetResult(target="integer_only", ok=True, reasons=[
        "integer only; 1 quantize and 1 dequantize at the edges"]) if integer or
        scheme == "int16x8" else TargetResult(target="integer_only", ok=False, reasons=[
            "66 float ops: CONV_2D x35, DEPTHWISE_CONV_2D x17, ADD x10, MEAN x1, ...",
            "131 float tensors between ops"]))  # fmt: skip
    return {"mcu": mcu, "edgetpu": edgetpu, "gpu": gpu, "integer_only": integer_only}


def make_wide_results(name: str = "flowers-default", photos: bool = True) -> RunResults:
    """A default-preset-shaped run: 16 converted files (8 schemes x float and qat_finetune),
    two Keras rows, every file judged on mcu, edgetpu, gpu and integer_only; long names,
    and most points within a few hundredths of a MB of 1.3 MB."""
    results = make_results(name=name, failed=False, qat=False, photos=False)
    keep = [v for v in results.variants if v.kind == "keras"]
    results.variants = keep
    results.training.append(TrainingResult(name="qat_finetune", recipe="finetune", seed=1,
                                           repeat=0, epochs=epochs(2, 0.8, 30.0),
                                           total_seconds=78.0, train_images=3120))  # fmt: skip
    results.variants.append(VariantResult(
        variant="qat_finetune", source="qat_finetune", kind="keras", policy="Keras QAT model",
        path="qat_finetune.keras", size_bytes=5_600_000, accuracy=0.915, agreement=0.98,
        eval_images=550, per_class_accuracy={c: 0.915 for c in FLOWERS},
        confusion=confusion(FLOWERS, 0.915)))  # fmt: skip
    for source, offset in (("float", 0.0), ("qat_finetune", 0.004)):
        for suffix, (scheme, policy, size, acc, agree, ms) in WIDE_ROWS.items():
            variant = suffix if source == "float" else f"{source}_{suffix}"
            acc = min(0.999, acc + offset)
            row = VariantResult(
                variant=variant, source=source, scheme=scheme, policy=policy, repeat=0,
                path=f"{variant}.tflite", size_bytes=size + (2_000 if offset else 0),
                convert_seconds=3.2, accuracy=acc, agreement=agree, eval_images=550,
                input_dtype="int8" if scheme == "int8_io" else "float32",
                latency=latency(ms * (1.02 if offset else 1.0)),
                per_class_accuracy={c: max(0.0, acc - 0.02 * k) for k, c in enumerate(FLOWERS)},
                confusion=confusion(FLOWERS, acc),
            )  # fmt: skip
            row.targets = targets_for(scheme, row.size_bytes, acc)
            row.gzip_bytes = int(row.size_bytes * (0.93 if scheme.startswith("float") else 0.81))
            distinct = {"float32": 45_113, "float16": 44_871}.get(scheme, 256)
            row.weights = WeightStats(sparsity=0.0031 if distinct > 256 else 0.0142,
                                      max_unique=distinct,
                                      max_unique_per_channel=min(distinct, 256))  # fmt: skip
            results.variants.append(row)
    results.config["targets"] = {"mcu_ram": 512 * 1024, "mcu_flash": 1024 * 1024}
    if photos:
        add_photos(results)
    return results
