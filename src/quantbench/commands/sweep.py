"""`quantbench sweep`: many configurations of one experiment, each a full run; never prints.

A sweep file names a base (a preset, a config file, `set` overrides) and axes over any config
keys; the grid of their values is the trials. Every trial's config is resolved and validated
before anything runs. A trial's identity is a hash of its resolved config (output_dir and name
left out), so running a sweep again finds the trials it already finished (results.json with
status complete) and skips them, and resumes a trial that was killed half-way.

Trials that share a trained model (same data, model and training sections, different
calibration or schemes) are grouped: until one trial of a group has completed, no two of its
trials run at once, so the first trains the model into the store and its siblings load it
(the store's first writer wins, so concurrent siblings would each train it). Which engine runs
the trials (sweep_engines.py: this process, a process pool, Ray tasks) is independent of this.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from quantbench.core import atomic
from quantbench.core.config import RunConfig
from quantbench.engine.configure import read_config_file, resolve
from quantbench.core.errors import ConfigError, QuantbenchError, first_line
from quantbench.engine.context import Emit, silent
from quantbench.core.suggest import did_you_mean

SWEEP_SCHEMA_VERSION = 1
STATE_FILE = "sweep.json"
TRIALS_DIR = "trials"
# Config keys that say where and under what name a trial is written, not what it measures.
_NOT_IDENTITY = ("output_dir", "name")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepBase(_Strict):
    preset: str = "default"
    config: Path | None = None  # a YAML/TOML config file, relative to the sweep file
    set: dict[str, Any] = Field(default_factory=dict)  # dotted config keys -> values


class SweepSpec(_Strict):
    schema_version: int = SWEEP_SCHEMA_VERSION
    name: str | None = None  # default: the sweep file's stem
    command: Literal["run", "quantize"] = "run"
    base: SweepBase = Field(default_factory=SweepBase)  # quantize: set quantize.model, data.dir
    axes: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values (a grid)
    max_trials: int | None = Field(None, ge=1)

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != SWEEP_SCHEMA_VERSION:
            raise ValueError(f"this quantbench reads sweep schema_version {SWEEP_SCHEMA_VERSION}")
        return value

    @field_validator("axes", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, values in value.items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"axis {key!r} must be a non-empty list of values, "
                                     f"got {values!r}")  # fmt: skip
        return value


class Trial(BaseModel):
    id: str
    label: str  # "alpha=0.35 image_size=64", for people
    values: dict[str, Any]  # this trial's axis values
    group: str  # trials with the same group share a trained model
    config: dict[str, Any]  # the resolved, validated RunConfig
    size_given: bool = False  # quantize: the user named the input size (else the model's)


class LatencyInterval(BaseModel):
    node: str
    start: float  # time.time() when the latency measurement began and ended
    end: float


class TrialRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    label: str
    values: dict[str, Any] = Field(default_factory=dict)
    group: str = ""
    status: Literal["pending", "running", "complete", "failed"] = "pending"
    run_dir: str | None = None
    error: str | None = None
    node: str | None = None
    seconds: float | None = None
    skipped: bool = False  # finished by an earlier invocation of the sweep
    latency_intervals: list[LatencyInterval] = Field(default_factory=list)


class SweepState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = SWEEP_SCHEMA_VERSION
    name: str
    command: str = "run"
    engine: str = "local"
    created: str
    updated: str | None = None
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    recommend: dict[str, Any] = Field(default_factory=dict)  # the constraints, as `run` has them
    trials: list[TrialRecord] = Field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"complete": 0, "running": 0, "failed": 0, "pending": 0}
        for t in self.trials:
            out[t.status] += 1
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _describe(e: ValidationError, where: str) -> ConfigError:
    first = e.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        model: Any = SweepSpec if loc[0] != "base" else SweepBase
        choices = list(model.model_fields)
        return ConfigError(f"unknown sweep key {key!r}{did_you_mean(loc[-1], choices)} in {where}",
                           tip="valid keys here: " + ", ".join(choices))  # fmt: skip
    return ConfigError(f"bad value for {key!r} in {where}: {first['msg']}", tip="fix that value")


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (YAML or TOML)."""
    path = Path(path)
    data = read_config_file(path)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        raise _describe(e, str(path)) from None
    if spec.base.config is not None and not spec.base.config.is_absolute():
        spec.base.config = (path.parent / spec.base.config).resolve()
    if spec.name is None:
        spec.name = path.stem
    return spec


def _check_key(key: str) -> None:
    """An axis key must name a config field: walk RunConfig, did-you-mean at the first miss."""
    fields: Any = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if fields is None or part not in fields.model_fields:
            choices = list(fields.model_fields) if fields is not None else []
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"unknown sweep axis {key!r}{did_you_mean(part, choices)}",
                              tip=f"valid keys at {where}: " + ", ".join(choices))  # fmt: skip
        annotation = fields.model_fields[part].annotation
        fields = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if fields is None and i < len(parts) - 1:
            raise ConfigError(f"sweep axis {key!r}: {'.'.join(parts[:i + 1])} has no sub-keys",
                              tip="name a leaf key, e.g. model.alpha")  # fmt: skip


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def identity(cfg: RunConfig, command: str) -> str:
    """The hash of what a trial measures: its resolved config, without where it is written."""
    data = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IDENTITY}
    text = json.dumps({"command": command, "config": data}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_group(cfg: RunConfig) -> str:
    """Trials with equal groups train the same base model (runner.TrainedBaseline's key)."""
    d = cfg.to_dict()
    shared = {k: d[k] for k in ("data", "model", "train", "transforms")}
    shared["seeds"] = cfg.training_seeds()
    shared["quantize_model"] = str(cfg.quantize.model) if cfg.quantize.model else None
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trials_of(spec: SweepSpec, sweep_dir: Path, max_trials: int | None = None) -> list[Trial]:
    """Every trial's config, resolved and validated before anything runs."""
    for key in (*spec.axes, *spec.base.set):
        _check_key(key)
    keys = list(spec.axes)
    combos = list(itertools.product(*(spec.axes[k] for k in keys))) if keys else [()]
    limit = max_trials or spec.max_trials
    combos = combos[:limit] if limit else combos
    trials, seen = [], set()
    for combo in combos:
        values = dict(zip(keys, combo))
        label = " ".join(f"{_short(k)}={v}" for k, v in values.items()) or "base"
        overrides = {**spec.base.set, **values}
        size_given = False
        try:
            if spec.command == "quantize":  # the quantize command's own defaults (no QAT, ...)
                from quantbench.commands.quantize import build_config

                cfg, size_given = build_config(None, {}, spec.base.config, overrides)
            else:
                cfg = resolve(spec.base.preset, spec.base.config, overrides)
        except QuantbenchError as e:
            raise ConfigError(f"sweep trial {label}: {e.message}", tip=e.tip) from None
        trial_id = identity(cfg, spec.command)
        if trial_id in seen:
            continue  # two axis values that resolve to one config: one trial
        seen.add(trial_id)
        slug = "-".join(f"{_short(k)}{v}" for k, v in values.items()) or "base"
        cfg = cfg.model_copy(update={"output_dir": sweep_dir / TRIALS_DIR / trial_id,
                                     "name": f"{spec.name}-{slug}"})  # fmt: skip
        trials.append(Trial(id=trial_id, label=label, values=values, group=model_group(cfg),
                            config=cfg.to_dict(), size_given=size_given))  # fmt: skip
    return trials


def finished_run(trial_dir: Path) -> tuple[Path | None, Path | None]:
    """(a complete run directory, else the newest one to resume) of a trial; None for none."""
    from quantbench.core.results import load

    complete, partial = None, None
    for run_dir in sorted(trial_dir.glob("*/results.json")):
        try:
            status = load(run_dir).status
        except QuantbenchError:
            continue  # damaged (killed mid-write cannot happen: writes are atomic); start anew
        if status == "complete":
            complete = run_dir.parent
        else:
            partial = run_dir.parent
    return complete, partial


def save_state(state: SweepState, sweep_dir: Path) -> None:
    state.updated = _now()
    atomic.write_text(sweep_dir / STATE_FILE, state.model_dump_json(indent=2) + "\n")


def load_state(sweep_dir: Path) -> SweepState:
    path = Path(sweep_dir) / STATE_FILE
    if not path.is_file():
        raise QuantbenchError(f"{sweep_dir} is not a sweep directory (no {STATE_FILE})",
                              tip="pass the directory `quantbench sweep` printed")  # fmt: skip
    try:
        return SweepState.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as e:
        raise QuantbenchError(f"cannot read {path}: {first_line(e)}",
                              tip="the sweep directory is damaged; run the sweep again") from None


def sweep_dir_of(spec: SweepSpec, output_dir: Path) -> Path:
    """Where a sweep lives: fixed by its name, so running it again continues it."""
    import re

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.name or "sweep").strip("-") or "sweep"
    return Path(output_dir).absolute() / f"sweep-{slug}"


def run_sweep(spec: SweepSpec, *, engine: Any, output_dir: Path = Path("runs"),
              max_trials: int | None = None, emit: Emit = silent,
              on_change: Callable[[SweepState], None] | None = None) -> tuple[SweepState, Path]:  # fmt: skip
    """Run every trial not finished yet on `engine` (sweep_engines.py: LocalEngine, RayEngine);
    write sweep.json after every change, then the sweep report. Returns (state, sweep dir)."""
    sweep_dir = sweep_dir_of(spec, output_dir)
    trials = trials_of(spec, sweep_dir, max_trials)  # everything validated before any work
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(sweep_dir / "sweep.yaml", yaml.safe_dump(spec.model_dump(mode="json"),
                                                               sort_keys=False))  # fmt: skip
    state = SweepState(name=spec.name or "sweep", command=spec.command, engine=engine.name,
                       created=_now(), axes=spec.axes,
                       recommend=trials[0].config.get("recommend", {}) if trials else {})  # fmt: skip
    todo: list[Trial] = []
    for trial in trials:
        record = TrialRecord(id=trial.id, label=trial.label, values=trial.values, group=trial.group)
        done, _ = finished_run(sweep_dir / TRIALS_DIR / trial.id)
        if done is not None:
            record.status, record.run_dir, record.skipped = "complete", str(done), True
        else:
            todo.append(trial)
        state.trials.append(record)
    skipped = len(trials) - len(todo)
    emit("step", f"sweep {state.name}: {len(trials)} trials in {sweep_dir}"
         + (f"; {skipped} finished earlier, skipped" if skipped else ""))  # fmt: skip
    save_state(state, sweep_dir)
    try:
        _schedule(todo, state, engine, sweep_dir, emit, on_change)
    finally:
        engine.close()
        save_state(state, sweep_dir)
    from quantbench.report.sweep import write_sweep_report

    try:
        write_sweep_report(state, sweep_dir)
    except Exception as e:  # noqa: BLE001 - a report bug must not cost the trials
        emit("warn", f"could not write the sweep report ({type(e).__name__}: {e})")
    return state, sweep_dir


def _schedule(todo: list[Trial], state: SweepState, engine: Any, sweep_dir: Path, emit: Emit,
              on_change: Callable[[SweepState], None] | None) -> None:  # fmt: skip
    """Start trials while the engine has room; one trial per model group at a time until the
    group has completed one (its model is then in the store for the others)."""
    records = {r.id: r for r in state.trials}
    group_done = {r.group for r in state.trials if r.status == "complete"}
    pending = list(todo)
    running: dict[Any, Trial] = {}

    def changed(level: str, text: str) -> None:
        save_state(state, sweep_dir)
        c = state.counts()
        emit(level, f"{text} [{c['complete']} done, {c['running']} running, {c['failed']} failed, "
                    f"{c['pending']} to go]")  # fmt: skip
        if on_change is not None:
            on_change(state)

    while pending or running:
        busy = {t.group for t in running.values()}
        while pending and len(running) < engine.slots:
            ready = next((t for t in pending if t.group in group_done or t.group not in busy), None)
            if ready is None:
                break
            pending.remove(ready)
            busy.add(ready.group)
            record = records[ready.id]
            record.status, record.error = "running", None
            running[engine.submit(ready, emit)] = ready
            changed("step", f"trial {ready.label}: started")
        handle, outcome = engine.wait(list(running))
        trial = running.pop(handle)
        record = records[trial.id]
        record.status = outcome.get("status", "failed")
        record.run_dir, record.error = outcome.get("run_dir"), outcome.get("error")
        record.node, record.seconds = outcome.get("node"), outcome.get("seconds")
        record.latency_intervals = [LatencyInterval(node=n, start=s, end=e)
                                    for n, s, e in outcome.get("latency_intervals", [])]  # fmt: skip
        if record.status == "complete":
            group_done.add(trial.group)
            changed("step", f"trial {trial.label}: complete in {record.seconds or 0:.0f} s"
                    + (f" on {record.node}" if record.node else ""))  # fmt: skip
        else:
            changed("warn", f"trial {trial.label}: failed: {record.error}")


def wall_clock() -> float:
    return time.time()
