"""`quantbench export RUN_DIR`: one variant of a finished run, ready to ship.

The folder holds the variant's `.tflite` file (the run's bytes, unchanged), `labels.txt` (the
class names in the order of the model's outputs) and `MODEL_CARD.md`: how to feed the model,
what it scored with its uncertainty, how big and fast it is and where, which targets it
passes, how it was made, and the run's config. Every figure in the card is read from the
run's results.json; nothing is measured again, and nothing here imports TensorFlow.

Which variant: `variant=` by name, else the run's recommendation (the one stored in
results.json, else computed from the run's `recommend` config section). Only converted rows
that measured fine (status "ok") can be exported; any other name is refused with the names
that can.

The folder is built beside the target and renamed into place, so a crash never leaves half
an export. An existing non-empty folder is refused, unless `force=True` and it holds an
earlier export and nothing else (MODEL_CARD.md, labels.txt, a .tflite file): then it is
replaced whole. Other files are never deleted.

No TF Lite metadata is embedded (docs/export.md says why: no maintained metadata writer
installs beside this project's pins).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quantbench.analysis.errors import plain_error
from quantbench.analysis import recommend as recommend_mod
from quantbench.core import atomic
from quantbench.core.errors import ConfigError, QuantbenchError, displayable, machine_error
from quantbench.core.results import RunResults, VariantResult, load
from quantbench.core.suggest import did_you_mean
from quantbench.core.version import __version__

CARD_FILE = "MODEL_CARD.md"
LABELS_FILE = "labels.txt"
CONFIG_FILE = "config.yaml"  # the run directory's config (engine/rundir.py writes it)

# What `pixel -> input` each scaling means (ml/preprocess.Preprocessing.scale), in words.
_SCALING_WORDS = {
    "-1..1": "x = p / 127.5 - 1 (inputs in -1..1)",
    "0..1": "x = p / 255 (inputs in 0..1)",
    "0..255": "x = p (the pixel values as they are, 0..255)",
    "imagenet": "x = (p - mean) / std per RGB channel, mean (123.675, 116.28, 103.53), "
                "std (58.395, 57.12, 57.375)",
}  # fmt: skip
# The defaults of config.DataConfig, for a results file whose config does not say.
_DATA_DEFAULTS = {"scaling": "-1..1", "channel_order": "rgb"}
_TARGET_WORDS = {"mcu": "a microcontroller (TF Lite Micro)", "edgetpu": "the Edge TPU",
                 "gpu": "the GPU delegate", "integer_only": "integer-only hardware"}  # fmt: skip


class ExportError(QuantbenchError):
    """The variant cannot be exported, or not to that folder."""


@dataclass
class Exported:
    """What `export` wrote, for the CLI to tell."""

    variant: str
    folder: Path
    model: Path
    labels: Path
    card: Path
    size_bytes: int
    classes: int
    recommended: str | None  # the run's recommendation (None: it recommends none)
    reason: str | None  # why it is recommended
    chose: str  # "recommended" or "named" (variant= given)
    replaced: bool = False  # an earlier export in the folder was replaced (force)
    run_status: str = "complete"
    warnings: list[str] = field(default_factory=list)


# --- which variant ---------------------------------------------------------------------------


def exportable(results: RunResults) -> list[str]:
    """The rows that can be exported: converted TF Lite files that measured fine."""
    return [v.variant for v in results.rows(0) if v.kind == "tflite" and v.ok]


def _alternatives(results: RunResults) -> str:
    names = exportable(results)
    return ("variants that can be exported: " + ", ".join(names)) if names else \
        "this run has no variant that converted and measured fine"


def recommendation(results: RunResults) -> recommend_mod.Recommendation:
    """The run's stored recommendation, else one computed from the run's own constraints."""
    stored = recommend_mod.stored(results)
    if stored is not None:
        return stored
    try:
        constraints = recommend_mod.constraints_of(results)
    except ValueError as e:  # pydantic's ValidationError: the run's recommend section
        raise ConfigError(f"the run's recommend config cannot be read: {str(e).splitlines()[0]}",
                          tip="pass --variant NAME to export a variant by name") from None
    return recommend_mod.recommend(results, constraints)


def choose(results: RunResults, variant: str | None,
           rec: recommend_mod.Recommendation | None = None) -> VariantResult:  # fmt: skip
    """The row to export: `variant`, or the recommended one (`rec`, else the run's); a clear
    error for any other."""
    if variant is None:
        rec = rec or recommendation(results)
        if rec.chosen is None:
            raise ExportError(f"the run recommends no variant: {rec.reason}",
                              tip=f"pass --variant NAME; {_alternatives(results)}")
        variant = rec.chosen
    row = results.variant(variant)
    if row is None:
        names = [v.variant for v in results.rows(0)]
        raise ExportError(f"no variant {variant!r} in this run{did_you_mean(variant, names)}",
                          tip=_alternatives(results))
    if row.kind != "tflite":
        raise ExportError(f"{variant} is the Keras model the variants are compared with, not a "
                          "TF Lite file", tip=_alternatives(results))  # fmt: skip
    if row.status == "failed":
        why = f": {plain_error(row.error)}" if row.error else ""
        raise ExportError(f"{variant} failed to convert{why}", tip=_alternatives(results))
    if row.status == "identical":
        raise ExportError(
            f"{variant} is byte-identical to {row.identical_to} (the scheme had no effect); "
            f"export {row.identical_to} instead", tip=_alternatives(results))  # fmt: skip
    return row


# --- the export ------------------------------------------------------------------------------


def export(run_dir: str | Path, output_dir: str | Path, variant: str | None = None,
           force: bool = False) -> Exported:  # fmt: skip
    """Write `variant` (default: the recommended one) of the run in `run_dir` to `output_dir`:
    its .tflite file, labels.txt and MODEL_CARD.md."""
    run_dir = Path(run_dir)
    out = Path(output_dir)
    results = load(run_dir)
    if variant is None:
        rec = recommendation(results)
    else:  # by name: the recommendation is only mentioned, so a bad recommend section is no error
        try:
            rec = recommendation(results)
        except QuantbenchError:
            rec = None
    row = choose(results, variant, rec)
    replaced = _check_output(out, force)
    model_bytes = _model_bytes(run_dir, row)
    classes = _classes(results)
    model_name = _file_name(row.variant) + ".tflite"
    chose = "named" if variant is not None else "recommended"
    card = model_card(results, row, model_name, model_bytes, rec, chose,
                      config_text=_config_text(run_dir, results), run_dir=run_dir)  # fmt: skip
    files = {model_name: model_bytes, LABELS_FILE: "".join(f"{c}\n" for c in classes).encode(),
             CARD_FILE: card.encode("utf-8")}  # fmt: skip
    _write_folder(out, files)
    warnings = []
    if results.status != "complete":
        warnings.append(f"the run is {results.status}: not every variant may have been measured"
                        + ("; the recommendation is among those that were" if chose ==
                           "recommended" else ""))  # fmt: skip
    return Exported(
        variant=row.variant, folder=out, model=out / model_name, labels=out / LABELS_FILE,
        card=out / CARD_FILE, size_bytes=len(model_bytes), classes=len(classes),
        recommended=rec.chosen if rec else None, reason=rec.reason if rec else None,
        chose=chose, replaced=replaced,
        run_status=results.status, warnings=warnings,
    )  # fmt: skip


def _file_name(variant: str) -> str:
    """The variant's name as a file name; `model` for a name no file should carry."""
    return variant if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,100}", variant) else "model"


def _model_bytes(run_dir: Path, row: VariantResult) -> bytes:
    if not row.path:
        raise ExportError(f"results.json names no .tflite file for {row.variant}",
                          tip="re-run, or `quantbench run --resume RUN_DIR` to convert it again")
    path = run_dir / row.path
    if not path.is_file():
        raise ExportError(f"the .tflite file of {row.variant} is missing: {displayable(path)}",
                          tip="the run directory was changed; `quantbench run --resume RUN_DIR` "
                          "converts missing files again")  # fmt: skip
    try:
        data = path.read_bytes()
    except OSError as e:
        raise machine_error(e, path) from e
    if row.size_bytes is not None and len(data) != row.size_bytes:
        raise ExportError(
            f"{displayable(path)} is {len(data):,} bytes, but the run measured a file of "
            f"{row.size_bytes:,} bytes: it changed after the run, so the card would describe "
            "another model", tip="re-run to measure the file as it is now")  # fmt: skip
    return data


def _classes(results: RunResults) -> list[str]:
    classes = list(results.data.classes) if results.data is not None else []
    if not classes:
        raise ExportError("results.json holds no class names, so labels.txt cannot be written",
                          tip="export from a run written by `quantbench run` or `quantize`")
    bad = next((c for c in classes if "\n" in c or "\r" in c), None)
    if bad is not None:
        raise ExportError(f"the class name {bad!r} holds a line break, which labels.txt (one "
                          "name a line) cannot hold", tip="rename that class folder and re-run")
    return classes


def _check_output(out: Path, force: bool) -> bool:
    """Whether `out` holds an earlier export to replace; refuse any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{displayable(out)} is a file, not a folder",
                          tip="pass -o a new or empty folder")
    if not out.is_dir():
        return False
    try:
        names = sorted(p.name for p in out.iterdir())
    except OSError as e:
        raise machine_error(e, out) from e
    if not names:
        return False
    if not force:
        raise ExportError(f"{displayable(out)} is not empty ({_listing(names)})",
                          tip="pass -o a new or empty folder, or --force to replace an earlier "
                          "export in it")  # fmt: skip
    foreign = [n for n in names if not _export_file(out / n)]
    if foreign or CARD_FILE not in names:
        raise ExportError(
            f"{displayable(out)} does not hold an earlier export only "
            f"({'it also holds ' + _listing(foreign) if foreign else 'it has no ' + CARD_FILE}); "
            "--force replaces an earlier export, never other files",
            tip="pass -o a new or empty folder")  # fmt: skip
    return True


def _export_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and (
        path.name in (CARD_FILE, LABELS_FILE) or path.suffix == ".tflite")


def _listing(names: list[str]) -> str:
    shown = ", ".join(displayable(n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """Build the folder beside `out`, then rename it into place (replacing an earlier export)."""
    parent = out.parent
    staging = old = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = _new_folder(parent, f".{out.name}.export-")
        for name, data in files.items():
            atomic.write_bytes(staging / name, data)
        if out.is_dir() and any(out.iterdir()):
            old = _new_folder(parent, f".{out.name}.replaced-")
            os.replace(out, old)  # onto the empty folder just made
        os.replace(staging, out)  # onto nothing, or an empty folder
        staging = None
    except BaseException as e:  # a full disk, or a stop signal between the two renames
        if old is not None and not out.exists():
            try:
                os.replace(old, out)  # put the earlier export back
            except OSError:
                pass  # then it stays where it is: never deleted
            old = None
        if isinstance(e, OSError):
            raise machine_error(e, out) from e
        raise
    finally:
        for leftover in (staging, old):
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new, empty folder with a unique name; its mode from the umask, like any folder the
    user makes (tempfile.mkdtemp's would be private)."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(0o777)
            return path
        except FileExistsError:
            continue


def _config_text(run_dir: Path, results: RunResults) -> str:
    """config.yaml as the run wrote it, else the config results.json holds, as YAML."""
    path = run_dir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        text = None
    if text is None:
        text = yaml.safe_dump(results.config, sort_keys=False) if results.config else ""
    return text


# --- the model card --------------------------------------------------------------------------


def pct(value: float) -> str:
    """A fraction 0..1 as a percentage with one decimal: 0.8617 -> 86.2%."""
    return f"{value * 100:.1f}%"


def points(value: float) -> str:
    """A difference of fractions in percentage points, signed: -0.013 -> -1.3."""
    return f"{value * 100:+.1f}"


def p_value(value: float) -> str:
    return f"{value:.2g}"


def size(n: int) -> str:
    return f"{n:,} bytes ({n / 1e6:.2f} MB)"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _data_setting(results: RunResults, key: str) -> Any:
    data = results.config.get("data") if isinstance(results.config, dict) else None
    value = data.get(key) if isinstance(data, dict) else None
    if value is None and key == "image_size" and results.data is not None:
        return results.data.image_size
    return _DATA_DEFAULTS.get(key) if value is None else value


def model_card(results: RunResults, row: VariantResult, model_name: str, model_bytes: bytes,
               rec: recommend_mod.Recommendation | None, chose: str,
               config_text: str = "", run_dir: Path | None = None) -> str:  # fmt: skip
    """MODEL_CARD.md for `row`: every figure read from `results` (results.json)."""
    sections = [
        _heading(results, row, rec, chose, run_dir),
        _files(results, model_name, model_bytes),
        _input_output(results, row),
        _accuracy(results, row),
        _size(row),
        _latency(results, row),
        _targets(row),
        _how_made(results, row),
        _versions(results),
        _configuration(config_text),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def _heading(results: RunResults, row: VariantResult, rec: recommend_mod.Recommendation | None,
             chose: str, run_dir: Path | None) -> list[str]:  # fmt: skip
    where = f" in `{displayable(run_dir.name)}`" if run_dir is not None else ""
    lines = [f"# {row.variant}: {results.name}", "",
             f"A TF Lite image classifier exported by quantbench {__version__} from the run "
             f"`{results.name}`{where} (`quantbench {results.command}`, created "
             f"{results.created}).", ""]  # fmt: skip
    if chose == "recommended":
        lines.append("**Why this variant:** the run recommends it."
                     + (f" {rec.reason}" if rec else ""))  # fmt: skip
    elif rec is not None and rec.chosen:
        lines.append(f"**Why this variant:** chosen by name. The run recommends {rec.chosen}: "
                     f"{rec.reason}")  # fmt: skip
    else:
        lines.append("**Why this variant:** chosen by name; the run recommends none"
                     + (f": {rec.reason}" if rec else "."))  # fmt: skip
    if results.status != "complete":
        lines += ["", f"**The run is {results.status}:** not every variant may have been measured."]
    if results.repeats > 1:
        lines += ["", f"The run trained {results.repeats} times (repeats); this file and every "
                  "figure below are the first training run's."]  # fmt: skip
    return lines


def _files(results: RunResults, model_name: str, model_bytes: bytes) -> list[str]:
    classes = results.data.classes if results.data else []
    return [
        "## Files", "",
        "| file | what |",
        "| --- | --- |",
        f"| `{model_name}` | the model, {size(len(model_bytes))}, sha256 "
        f"`{hashlib.sha256(model_bytes).hexdigest()}` |",
        f"| `{LABELS_FILE}` | the {len(classes)} class names, one a line, in the order of the "
        "model's outputs |",
        f"| `{CARD_FILE}` | this card |", "",
        "The .tflite file carries no TF Lite metadata: give your runtime the labels and the "
        "preprocessing below yourself.",
    ]  # fmt: skip


def _input_output(results: RunResults, row: VariantResult) -> list[str]:
    image_size = _data_setting(results, "image_size")
    scaling = str(_data_setting(results, "scaling"))
    order = str(_data_setting(results, "channel_order"))
    classes = results.data.classes if results.data else []
    quantized_input = row.input_dtype in ("int8", "uint8", "int16")
    return [
        "## Input and output", "",
        f"- input size: {image_size} x {image_size} pixels, 3 channels: the whole photo resized "
        "(not cropped) with bilinear filtering, in sRGB",
        f"- scaling: `{scaling}`: from pixel values p in 0..255, "
        f"{_SCALING_WORDS.get(scaling, 'see the config below')}",
        f"- channel order: {order.upper()}"
        + (" (the channels reversed after scaling)" if order == "bgr" else ""),
        f"- input dtype: {row.input_dtype or 'not recorded'}"
        + (" (quantize the scaled input with the input tensor's scale and zero point)"
           if quantized_input else ""),
        f"- output dtype: {row.output_dtype or 'not recorded'}; one score per class, in the "
        f"order of {LABELS_FILE}",
        f"- classes: {', '.join(classes)}",
    ]  # fmt: skip


def _accuracy(results: RunResults, row: VariantResult) -> list[str]:
    lines = ["## Accuracy", ""]
    if row.accuracy is None:
        lines.append("- accuracy: not measured")
    else:
        photos = f" on {row.eval_images:,} photos" if row.eval_images else ""
        ci = (f" (95% interval {pct(row.accuracy_ci[0])} to {pct(row.accuracy_ci[1])})"
              if row.accuracy_ci else "")  # fmt: skip
        lines.append(f"- accuracy: {pct(row.accuracy)}{photos}{ci}")
    paired, ref = row.vs_reference, results.reference
    if paired is not None:
        lines.append(
            f"- difference from the float model ({paired.reference}): "
            f"{points(paired.difference)} points (95% interval {points(paired.ci[0])} to "
            f"{points(paired.ci[1])}, paired over the same {paired.n:,} photos); exact McNemar "
            f"p = {p_value(paired.p_value)} ({paired.gained} photos gained, {paired.lost} "
            "lost)")  # fmt: skip
    elif ref is not None and ref.accuracy is not None and row.accuracy is not None:
        lines.append(f"- difference from the float model ({ref.variant}): "
                     f"{points(row.accuracy - ref.accuracy)} points (no paired interval: the "
                     "run stored no per-photo predictions)")  # fmt: skip
    if row.agreement is not None:
        ci = (f" (95% interval {pct(row.agreement_ci[0])} to {pct(row.agreement_ci[1])})"
              if row.agreement_ci else "")  # fmt: skip
        lines.append(f"- top-1 agreement with the float model: {pct(row.agreement)}{ci}")
    if results.data is not None and results.data.eval_split:
        lines.append(f"- the photos scored: {results.data.eval_split}")
    if row.per_class_accuracy:
        lines.append("- per class: "
                     + ", ".join(f"{c} {pct(a)}" for c, a in row.per_class_accuracy.items()))
    return lines


def _size(row: VariantResult) -> list[str]:
    lines = ["## Size", "",
             f"- file: {size(row.size_bytes)}" if row.size_bytes is not None
             else "- file: not measured",
             f"- gzipped (the download): {size(row.gzip_bytes)}" if row.gzip_bytes is not None
             else "- gzipped: not measured"]  # fmt: skip
    if row.weights is not None:
        lines.append(f"- weights: {pct(row.weights.sparsity)} zeros; at most "
                     f"{row.weights.max_unique_per_channel} distinct values in one output "
                     "channel")  # fmt: skip
    return lines


def _latency(results: RunResults, row: VariantResult) -> list[str]:
    env = results.environment
    lines = ["## Latency", ""]
    if env is not None:
        fed = next((r.inputs for r in row.latency if r.inputs), None)
        lines.append(f"Measured on {env.cpu_model} ({env.cpu_cores} cores), {env.platform}, "
                     f"with LiteRT {env.litert or '(version not recorded)'}"
                     + (f"; inputs: {fed}" if fed else "") + ".")  # fmt: skip
    else:
        lines.append("The machine it was measured on is not recorded.")
    lines.append("")
    if not row.latency:
        return lines + ["Not measured."]
    nodes = any(r.node for r in row.latency)
    lines.append("| threads | delegate | runtime | median ms | p90 ms | timed runs | "
                 + ("machine | " if nodes else "") + "note |")  # fmt: skip
    lines.append("| --- | --- | --- | --- | --- | --- | " + ("--- | " if nodes else "") + "--- |")
    for r in row.latency:
        note = ", ".join(w for w, on in (("busy machine", r.busy), ("time cap hit", r.capped),
                                         ("re-measured", r.remeasured)) if on)  # fmt: skip
        lines.append(f"| {r.threads} | {r.delegate} | {r.runtime} | {ms(r.median_ms)} | "
                     f"{ms(r.p90_ms)} | {r.runs} | "
                     + (f"{_cell(r.node or '')} | " if nodes else "") + f"{note} |")  # fmt: skip
    return lines


def _targets(row: VariantResult) -> list[str]:
    if not row.targets:
        return ["## Targets", "", "Not checked: the run checked no targets."]
    passed = [n for n, t in row.targets.items() if t.ok]
    lines = ["## Targets", "",
             "Passes: " + (", ".join(passed) if passed else "none of the targets checked") + ".",
             "", "| target | runs there | why | figures |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for name, t in row.targets.items():
        verdict = {True: "yes", False: "no", None: "could not be judged"}[t.ok]
        figures = ", ".join(f"{k}={_figure(v)}" for k, v in t.figures.items() if v is not None)
        words = f", {_TARGET_WORDS[name]}" if name in _TARGET_WORDS else ""
        lines.append(f"| {_cell(name + words)} | {verdict} | {_cell('; '.join(t.reasons) or '-')} "
                     f"| {_cell(figures or '-')} |")  # fmt: skip
    return lines


def _how_made(results: RunResults, row: VariantResult) -> list[str]:
    spec = row.spec
    scheme = spec.scheme.text() if spec is not None and spec.scheme is not None else row.scheme
    transforms = [f"`{t.text()}`" for t in spec.transforms] if spec is not None else []
    lines = ["## How it was made", "",
             f"- scheme: `{scheme}` (the converter's policy: {row.policy})",
             f"- from the Keras model `{row.source}`"
             + (f" (transforms: {', '.join(transforms)})" if transforms else "")
             + _training_words(results, row)]  # fmt: skip
    model = results.config.get("model") if isinstance(results.config, dict) else None
    if isinstance(model, dict) and model.get("architecture"):
        lines.append(f"- architecture: {model.get('architecture')}, alpha {model.get('alpha')}, "
                     f"initial weights {model.get('weights')}")  # fmt: skip
    if row.convert_seconds is not None:
        lines.append(f"- converted in {row.convert_seconds:.1f} s")
    if row.selective is not None and row.selective.float_layers:
        lines.append(f"- layers kept in float ({len(row.selective.float_layers)}): "
                     + ", ".join(row.selective.float_layers))  # fmt: skip
    if row.id:
        lines.append(f"- variant id: `{row.id}`")
    lines += [f"- note: {note}" for note in row.notes]
    return lines


def _training_words(results: RunResults, row: VariantResult) -> str:
    run = next((t for t in results.training if t.name == row.source and t.repeat == row.repeat),
               None)  # fmt: skip
    if run is None or not run.epochs:
        return ""
    return (f", trained {len(run.epochs)} epoch{'s' if len(run.epochs) != 1 else ''} on "
            f"{run.train_images:,} photos (seed {run.seed})")  # fmt: skip


def _versions(results: RunResults) -> list[str]:
    env = results.environment
    if env is None:
        return ["## Versions", "",
                f"- not recorded by the run; quantbench {__version__} exported it"]
    lines = ["## Versions", "",
             f"- quantbench {env.quantbench} made the run; quantbench {__version__} exported it"]
    for label, value in (("TensorFlow", env.tensorflow), ("tf_keras", env.tf_keras),
                         ("LiteRT", env.litert), ("TF Model Optimization", env.tfmot),
                         ("NumPy", env.numpy), ("Python", env.python)):  # fmt: skip
        if value:
            lines.append(f"- {label} {value}")
    return lines


def _configuration(config_text: str) -> list[str]:
    text = config_text.rstrip("\n") or "# not recorded"
    fence = "```"
    while fence in text:  # a fence the text cannot close
        fence += "`"
    return ["## Run configuration", "", f"The run's `{CONFIG_FILE}`:", "", fence + "yaml", text,
            fence]


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: one line, no column breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")
