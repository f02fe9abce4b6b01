"""Converting with the registry's schemes: `convert_all` for one model, and the converter
workers' ops (`convert`, `warm`, `analyze`), which resolve a spec by its registry entry. They
sit above the registry (techniques/schemes.py); the process plumbing they run in (the pool,
the SavedModel export, comparing files) is converter.py, below it.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from quantbench.core import atomic
from quantbench.core.errors import MachineError
from quantbench.core.specs import TechniqueSpec
from quantbench.techniques.converter import (
    CONVERT_TIMEOUT_SECONDS, DISK_FULL_TIP, Conversion, Outcome, _stop_if_disk_full,
    convert_saved_model, export_saved_model, same_model, says_disk_full,
)  # fmt: skip
from quantbench.techniques.schemes import SCHEMES
from quantbench.workers import scratch_dir


def _representative_dataset(calibration_path: str | None):
    if calibration_path is None:
        return None
    calibration_images = np.load(calibration_path)

    def representative_dataset():
        for image in calibration_images:
            yield [image[None, ...]]

    return representative_dataset


ERROR_TEXT_LIMIT = 20_000  # characters of a converter's message kept (a few KB in practice)


def _error_line(exc: BaseException) -> str:
    """The converter's whole message, `ConverterError: <its text>`: the row's `error` in
    results.json. Views show it on one line in plain words (analysis/errors.py plain_error);
    only a runaway message (an op dump) is cut, at ERROR_TEXT_LIMIT characters."""
    text = str(exc).strip() or type(exc).__name__
    text = "\n".join(ln.rstrip() for ln in text.splitlines() if ln.strip())
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[:ERROR_TEXT_LIMIT] + f"\n... ({len(text) - ERROR_TEXT_LIMIT} more characters)"
    return f"{type(exc).__name__}: {text}"


def resolve_scheme(spec: dict[str, Any]):
    """The registry entry and typed parameters a conversion spec `{"name", "params"}` asks for."""
    from quantbench.techniques.schemes import conversion_of

    return conversion_of(TechniqueSpec.model_validate(spec))


def convert_one(saved_model_dir: str, spec: dict[str, Any], calibration_path: str | None,
                out_path: str) -> tuple[float, str | None]:  # fmt: skip
    """Convert with one scheme (in a worker process); returns (seconds, error or None)."""
    import tensorflow as tf

    scheme, params = resolve_scheme(spec)
    calibration = calibration_path if scheme.needs_representative_dataset else None
    started = time.perf_counter()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        model_bytes = scheme.convert(converter, _representative_dataset(calibration), params,
                                     source=f"{saved_model_dir}|{calibration}")  # fmt: skip
    except Exception as e:  # noqa: BLE001 - every converter failure is recorded, not raised
        return time.perf_counter() - started, _error_line(e)
    try:
        atomic.write_bytes(out_path, model_bytes)
    except MachineError as e:  # a full disk: the parent stops the run with this message
        return time.perf_counter() - started, e.message
    return time.perf_counter() - started, None


def convert_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The worker's `convert` op: {saved_model, spec, calibration, out} -> {seconds, error}."""
    seconds, error = convert_one(payload["saved_model"], payload["spec"], payload["calibration"],
                                 payload["out"])  # fmt: skip
    return {"seconds": seconds, "error": error}


def warm_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The worker's `warm` op: import TensorFlow (3-4 s) before there is anything to convert."""
    import tensorflow  # noqa: F401

    return {}


def analyze_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The worker's `analyze` op: {saved_model, spec, calibration, inputs} -> {rows}: the
    debugger's statistics of every quantized op of the base scheme `spec`."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as lite_convert

    from quantbench.techniques.layers import _debug_dataset, channel_error
    from quantbench.techniques.schemes import calibrated_model

    scheme, _ = resolve_scheme(payload["spec"])
    if not scheme.needs_representative_dataset:
        raise ValueError(f"{scheme.name} is not an integer scheme: no per-layer statistics")
    converter = tf.lite.TFLiteConverter.from_saved_model(payload["saved_model"])
    source = f"{payload['saved_model']}|{payload['calibration']}"
    calibrated = calibrated_model(scheme, converter, _representative_dataset(payload["calibration"]),
                                  source)  # fmt: skip
    debug_model = lite_convert.mlir_quantize(
        calibrated, disable_per_channel=not scheme.per_channel, fully_quantize=False,
        enable_numeric_verify=True,
    )  # fmt: skip
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_debug_metrics={"mean_abs_error": lambda diffs: float(np.mean(np.abs(diffs)))},
        layer_direct_compare_metrics={"channel_error": channel_error},
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=debug_model,
        debug_dataset=_debug_dataset(np.load(payload["inputs"])), debug_options=options,
    )  # fmt: skip
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    return {"rows": list(csv.DictReader(buffer))}


def convert_all(
    model,
    conversions: list[Any],
    calibration_images: np.ndarray,
    out_dir: Path,
    *,
    prefix: str = "",
    workers: int = 2,  # the caller's Resources.convert_workers; 2 for tests and scripts
    on_progress: Callable[[str, Conversion], None] | None = None,
    timeout: float = CONVERT_TIMEOUT_SECONDS,
) -> list[Conversion]:
    """Convert `model` with each conversion (a TechniqueSpec, or a scheme name) into
    out_dir/<prefix><slug>.tflite (numbered where two specs share a slug).

    Schemes that start from the float32 .tflite (`source="tflite"`: AEQ's) are made after
    the others from the float32 file (converted for them when not asked for), one at a time
    in a worker of their own.

    `on_progress(f"{prefix}{scheme}", conversion)` is called as each conversion finishes (its
    `identical_to` is set once all have), from a pool thread. Prints nothing: a failure is in
    its `Conversion.error`.
    """
    specs = [SCHEMES.coerce(c) for c in conversions]
    out_dir.mkdir(parents=True, exist_ok=True)
    # One output per spec, by position: two parametrizations of one scheme (selective of two
    # bases) are two files, so files are named by the spec's slug, numbered where slugs repeat.
    slugs = [SCHEMES.slug_of(spec) for spec in specs]
    out_paths = [str(out_dir / (f"{prefix}{slug}.tflite" if slugs.count(slug) == 1
                                else f"{prefix}{slug}-{i}.tflite"))
                 for i, slug in enumerate(slugs)]  # fmt: skip
    from_file = [SCHEMES.get(spec.name).source == "tflite" for spec in specs]
    direct = [i for i in range(len(specs)) if not from_file[i]]
    derived = [i for i in range(len(specs)) if from_file[i]]
    # The file each derived scheme starts from: a spec converted here, else one made for it.
    sources = {i: SCHEMES.get(specs[i].name).source_scheme(SCHEMES.params_of(specs[i])) for i in derived}
    position = {out_paths[i]: i for i in direct}
    finished: dict[int, Conversion] = {}
    extra: dict[TechniqueSpec, str] = {}  # source specs not asked for -> their file (in tmp)

    def done(out_path: str, outcome: Outcome) -> None:
        if out_path not in position:  # a file only a derived scheme starts from
            return
        i = position[out_path]
        seconds, error = outcome
        # The one export serves every scheme: charge each an equal share of it.
        share = export_seconds / max(1, len(direct) + len(extra))
        conversion = Conversion(specs[i].name, None if error else Path(out_path), seconds + share, error)
        finished[i] = conversion
        if on_progress is not None:
            on_progress(f"{prefix}{slugs[i]}", conversion)

    with scratch_dir("convert") as tmp:
        for i in derived:
            if sources[i] not in [specs[k] for k in direct] and sources[i] not in extra:
                extra[sources[i]] = str(Path(tmp) / f"source-{len(extra)}.tflite")
        started = time.perf_counter()
        try:
            saved_model_dir = export_saved_model(model, Path(tmp) / "saved_model")
        except Exception as e:
            if says_disk_full(str(e)):
                raise MachineError(f"the disk is full: cannot export the model to {tmp}",
                                   tip=DISK_FULL_TIP) from e  # fmt: skip
            raise
        export_seconds = time.perf_counter() - started
        calibration_path = Path(tmp) / "calibration.npy"
        atomic.save_npy(calibration_path, calibration_images.astype(np.float32))
        jobs = [(specs[i].model_dump(mode="json"), out_paths[i]) for i in direct]
        jobs += [(spec.model_dump(mode="json"), path) for spec, path in extra.items()]
        outcomes = convert_saved_model(saved_model_dir, jobs, calibration_path, workers,
                                       timeout=timeout, on_done=done)  # fmt: skip
        names = {path: slugs[position[path]] if path in position else SCHEMES.slug_of(spec)
                 for spec, path in [*((specs[i], out_paths[i]) for i in direct), *extra.items()]}  # fmt: skip
        _stop_if_disk_full({names[path]: outcome for path, outcome in outcomes.items()},
                           {names[path]: path for path in outcomes})  # fmt: skip
        files = {**{specs[i]: (out_paths[i], finished[i].error) for i in direct},
                 **{spec: (path, outcomes[path][1]) for spec, path in extra.items()}}  # fmt: skip
        made = _convert_derived([(specs[i], out_paths[i], sources[i], *files[sources[i]])
                                 for i in derived], calibration_path, timeout)  # fmt: skip
        for i, conversion in zip(derived, made):
            finished[i] = conversion
            if on_progress is not None:
                on_progress(f"{prefix}{slugs[i]}", conversion)
    conversions: list[Conversion] = []
    for i in range(len(specs)):
        conversion = finished[i]
        if conversion.error is None:
            twin = next((c for c in conversions if c.path and c.identical_to is None
                         and same_model(c.path, conversion.path)), None)  # fmt: skip
            conversion.identical_to = twin.scheme if twin else None
        conversions.append(conversion)
    return conversions


def _convert_derived(jobs: list[tuple[TechniqueSpec, str, TechniqueSpec, str, str | None]],
                     calibration_path: Path, timeout: float) -> list[Conversion]:  # fmt: skip
    """The schemes made from a .tflite, one after the other in one worker; each job is (spec,
    out path, the spec of the file it starts from, that file, its conversion's error)."""
    from quantbench.workers import Worker

    if not jobs:
        return []
    conversions = []
    with Worker("aeq") as worker:
        for spec, out_path, source, path, error in jobs:
            if error is not None:
                conversions.append(Conversion(spec.name, None, 0.0, f"no {SCHEMES.slug_of(source)} "
                                              f"file to start from: {error}"))  # fmt: skip
                continue
            conversions.append(SCHEMES.get(spec.name).convert_tflite(
                Path(path), Path(out_path), SCHEMES.params_of(spec), calibration_path,
                worker=worker, timeout=timeout))  # fmt: skip
    return conversions
