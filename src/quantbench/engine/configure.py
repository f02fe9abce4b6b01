"""A run's config from presets, config files (YAML or TOML) and flags; resume's config check.

Resolution order, later wins: preset -> `--config FILE` -> command-line flags (`--set
key=value` reaches any key). The schema is core/config.py; here the registries resolve every
technique named (did-you-mean on a typo, defaults filled in, so `qat` and
`qat:recipe=finetune` are one identity) and check the runtimes and the target.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from quantbench.core.config import PRESET_ALIASES, RunConfig
from quantbench.core.errors import ConfigError, first_line, read_text_file
from quantbench.core.suggest import did_you_mean

# Command-line flag (and Python API keyword) -> the dotted config key it sets; one table for
# every command, each of which accepts the subset it names.
FLAG_KEYS: dict[str, str] = {
    "data": "data.dir",
    "image_size": "data.image_size",
    "validation_split": "data.validation_split",
    "split_seed": "data.split_seed",
    "max_images_per_class": "data.max_images_per_class",
    "alpha": "model.alpha",
    "weights": "model.weights",
    "train_mode": "train.mode",
    "optimizer": "train.optimizer",
    "learning_rate": "train.learning_rate",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "schemes": "convert.schemes",
    "calibration_images": "convert.calibration_images",
    "search_data": "convert.search_data",
    "threads": "evaluate.threads",
    "latency_runs": "evaluate.latency_runs",
    "runtimes": "evaluate.runtimes",
    "wait_quiet": "evaluate.wait_quiet",
    "transforms": "transforms",
    "qat": "qat.recipes",
    "qat_epochs": "qat.epochs",
    "qat_learning_rate": "qat.learning_rate",
    "repeats": "repeats",
    "seeds": "seeds",
    "max_accuracy_drop": "recommend.max_accuracy_drop",
    "max_size": "recommend.max_size_mb",
    "max_gzip_size": "recommend.max_gzip_size_mb",
    "max_latency": "recommend.max_latency_ms",
    "objective": "recommend.objective",
    "confidence": "recommend.confidence",
    "target": "recommend.target",
    "mcu_ram": "targets.mcu_ram",
    "mcu_flash": "targets.mcu_flash",
    "track": "track",
    "name": "name",
    "output_dir": "output_dir",
    "labels": "data.labels_file",
    "scaling": "data.scaling",
    "channel_order": "data.channel_order",
    "eval_split": "quantize.eval_split",
    "check": "quantize.check",
    "unsafe": "quantize.unsafe",
    "custom_objects": "quantize.custom_objects",
}


# What run and quantize measure alike (cli/measure.py's shared options).
MEASURING_FLAGS = ("search_data", "threads", "latency_runs", "runtimes", "wait_quiet")
# What every measuring command (run, quantize) takes alike: recommendation, tracking, output.
REPORTING_FLAGS = ("max_accuracy_drop", "max_size", "max_gzip_size", "max_latency", "objective",
                   "confidence", "target", "mcu_ram", "mcu_flash", "track", "name",
                   "output_dir")  # fmt: skip


def flag_keys(*names: str) -> dict[str, str]:
    return {name: FLAG_KEYS[name] for name in names}


# Presets are partial configs; everything not named keeps the defaults above.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "data": {"image_size": 128},
        "model": {"alpha": 0.35, "weights": "imagenet"},
        "train": {"mode": "full", "learning_rate": 1e-4, "epochs": 5, "batch_size": 32},
        "transforms": ["qat:recipe=finetune"],  # the article's table has QAT rows
    },
    "article": {
        # "A Tale of Model Quantization in TF Lite", exactly.
        "data": {"image_size": 224, "validation_split": 0.15},
        "model": {"alpha": 1.0, "weights": "imagenet"},
        "train": {"mode": "full", "optimizer": "adam", "learning_rate": 1e-5, "epochs": 10,
                  "batch_size": 32},
        "transforms": ["qat:recipe=fresh"],
    },  # fmt: skip
    "smoke": {
        "data": {"image_size": 64, "max_images_per_class": 24},
        "model": {"alpha": 0.35, "weights": "imagenet", "dense_units": 32},
        "train": {"mode": "full", "learning_rate": 1e-3, "epochs": 1, "batch_size": 16},
        "convert": {"calibration_images": 8},
        "evaluate": {"latency_runs": 50, "warmup_runs": 2},
    },
}


def validate(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from plain data, checked by the schema and then by the registries."""
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise _describe(e, RunConfig) from None
    return resolve_names(cfg)


def resolve_names(cfg: RunConfig) -> RunConfig:
    """Every technique, runtime and target the config names, checked against its registry;
    technique parameters typed and completed with their defaults."""
    from quantbench.measure.runtimes import RUNTIMES
    from quantbench.targets import TARGETS
    from quantbench.techniques.schemes import SCHEMES
    from quantbench.techniques.transforms import TRANSFORMS

    cfg.transforms = TRANSFORMS.parse_list(cfg.transforms)
    if cfg.convert.schemes is not None:
        cfg.convert.schemes = SCHEMES.parse_list(cfg.convert.schemes)
    if cfg.convert.transform_schemes is not None:
        cfg.convert.transform_schemes = SCHEMES.parse_list(cfg.convert.transform_schemes)
    for name in cfg.evaluate.runtimes:
        if name not in RUNTIMES:
            raise ConfigError(f"bad value for 'evaluate.runtimes': unknown runtime {name!r}"
                              f"{did_you_mean(name, RUNTIMES)}",
                              tip=f"choose from: {', '.join(RUNTIMES)}")  # fmt: skip
    target = cfg.recommend.target
    if target is not None and target not in TARGETS:
        raise ConfigError(f"bad value for 'recommend.target': unknown target {target!r}"
                          f"{did_you_mean(target, list(TARGETS))}",
                          tip=f"choose from: {', '.join(list(TARGETS))}")  # fmt: skip
    return cfg


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML config file into a plain dict (validated later, with the rest)."""
    path = Path(path)
    text = read_text_file(path, "config file", ConfigError)
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(
                f"config file {path} must end in .yaml, .yml or .toml",
                tip="rename it so its format is clear",
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot parse {path}: {first_line(e)}", tip="fix the syntax") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections", tip="see README: Config")
    return data


def _describe(error: ValidationError, model: type[BaseModel]) -> ConfigError:
    """Turn pydantic's first error into one line that names the key and the fix."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        # Walk the model to list the keys that are valid where the unknown one stands.
        fields: Any = model
        for part in loc[:-1]:
            annotation = fields.model_fields[part].annotation if part in fields.model_fields else None
            fields = annotation if isinstance(annotation, type) else None
            if fields is None:
                break
        choices = list(fields.model_fields) if fields is not None else []
        hint = did_you_mean(loc[-1], choices)
        return ConfigError(
            f"unknown config key {key!r}{hint}",
            tip="valid keys here: " + ", ".join(choices) if choices else None,
        )
    ctx_error = first.get("ctx", {}).get("error")
    if isinstance(ctx_error, ConfigError):
        return ctx_error
    value = first.get("input")
    return ConfigError(f"bad value for {key!r}: {value!r}: {first['msg']}", tip="fix that value")


def resolve(
    preset: str = "default",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Build the run's config from a preset, an optional file and flag overrides."""
    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown preset {preset!r}{did_you_mean(preset, PRESETS)}",
            tip="presets: " + ", ".join(PRESETS),
        )
    merged: dict[str, Any] = _deep_merge({"preset": preset, "name": preset}, PRESETS[preset])
    if config_file is not None:
        merged = _deep_merge(merged, read_config_file(config_file))
    if overrides:
        merged = _deep_merge(merged, unflatten(overrides))
    return validate(merged)


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{'train.epochs': 3} -> {'train': {'epochs': 3}}; None values are dropped (flag unset)."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse `--set key=value`; the value is read as YAML so numbers and lists work."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}", tip="e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def for_resume(run_dir: str | Path, overrides: dict[str, Any] | None = None,
               config_file: str | Path | None = None) -> RunConfig:  # fmt: skip
    """The config of the run in `run_dir`, to resume it. Flags and a config file may repeat
    what the run used; anything that differs is an error naming the key, since the finished
    rows were measured under the run's own config."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a quantbench run directory (no config.yaml)",
                          tip="pass the run directory a `run` or `quantize` created")  # fmt: skip
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
        cfg = resolve_names(RunConfig.model_validate(stored))
    except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {first_line(e)}",
                          tip="the run directory is damaged; start a new run") from None  # fmt: skip
    asked = dict(overrides or {})
    if config_file is not None:
        for key, value in _flatten(read_config_file(config_file)).items():
            asked.setdefault(key, value)
    current = cfg.to_dict()
    for key, value in asked.items():
        if value is None:
            continue
        wanted = validate(_deep_merge(current, unflatten({key: value}))).to_dict()
        differences = _differences(current, wanted)
        if differences:
            where, old, new = differences[0]
            raise ConfigError(
                f"{run_dir} was run with {where}={old!r}; this command asks for {new!r}",
                tip="resume without that setting (the run's own config is used), or start a "
                "new run without --resume",
            )
    return cfg


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("qat",):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(dict.fromkeys([*a, *b])):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]
