"""A run directory: created (or reopened to resume), its config and results.json written,
its store chosen; nothing here prints.

A run directory holds config.yaml (the resolved config), results.json (written atomically
after every row), the converted files and the report. `--resume RUN_DIR` reopens it: finished
rows are kept, failed ones redone (engine/executor.py: keep_for_resume).
"""

from __future__ import annotations

import errno
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from quantbench.core import atomic, environment, results as results_mod
from quantbench.core.config import RunConfig
from quantbench.core.errors import machine_error
from quantbench.core.results import RunResults
from quantbench.engine.executor import keep_for_resume

CONFIG_FILE = "config.yaml"
PRIVATE_STORE = ".store"  # a --no-cache run's own store, which --resume reads


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_run_dir(output_dir: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    base = Path(output_dir) / f"{stamp}-{slug}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    try:
        path.mkdir(parents=True)
    except OSError as e:  # --output-dir is a file, read-only, not ours: say which
        raise machine_error(e, output_dir if e.errno == errno.ENOTDIR else None) from e
    return path


def start(cfg: RunConfig, command: str = "run") -> tuple[RunResults, Path]:
    """Create the run directory, write the resolved config and the first results.json."""
    run_dir = create_run_dir(cfg.output_dir, cfg.name)
    atomic.write_text(run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    results = RunResults(
        name=cfg.name, command=command, created=_now(), config=cfg.to_dict(),
        environment=environment.capture(),
    )  # fmt: skip
    results_mod.save(results, run_dir)
    return results, run_dir


def reopen(run_dir: Path) -> RunResults:
    """A run to resume: its finished rows kept, its failed ones to be redone."""
    results = results_mod.load(run_dir)
    specify_v1_rows(results)
    keep_for_resume(results)
    respec(results)
    results.status, results.finished = "running", None
    results_mod.save(results, run_dir)
    return results


def specify_v1_rows(results: RunResults) -> None:
    """Version 1 rows named their model by `source` and `scheme`: give each its spec and id,
    resolved by today's registries, so a resumed plan finds them finished. A row whose recipe
    or scheme this version does not know keeps no spec (and is redone)."""
    from quantbench.core.errors import QuantbenchError
    from quantbench.core.specs import VariantSpec
    from quantbench.techniques.schemes import SCHEMES
    from quantbench.techniques.transforms import TRANSFORMS

    for row in results.variants:
        if row.spec is not None:
            continue
        source = row.source or "float"
        try:
            transforms = (TRANSFORMS.spec("qat", recipe=source.removeprefix("qat_")),) \
                if source.startswith("qat_") else ()  # fmt: skip
            scheme = SCHEMES.spec(row.scheme) if row.scheme and row.kind == "tflite" else None
        except QuantbenchError:
            continue
        row.spec = VariantSpec(transforms=transforms, scheme=scheme, repeat=row.repeat or 0)
        row.id = row.spec.id


def respec(results: RunResults) -> None:
    """Rows whose stored spec reads differently now (QAT recipe `seed`, now `fresh`) take the
    spec and id it reads as, and the recorded models their new ids, so the resumed plan finds
    those rows finished and the models they came from. Names stay as measured: the report's
    stored sections use them, and the article's checks look up either spelling."""
    from quantbench.core.errors import QuantbenchError
    from quantbench.techniques.transforms import TRANSFORMS

    for row in results.variants:
        if row.spec is None:
            continue
        try:
            transforms = tuple(TRANSFORMS.coerce(t) for t in row.spec.transforms)
        except QuantbenchError:
            continue  # a transform this version does not know: the row is left as it is
        if transforms == row.spec.transforms:
            continue
        old, new = row.spec.model, row.spec.model_copy(update={"transforms": transforms})
        row.spec, row.id, model = new, new.id, new.model
        while old is not None and model is not None:
            if old.id in results.models:
                results.models.setdefault(model.id, results.models.pop(old.id))
            old, model = old.parent, model.parent


def finish(results: RunResults, run_dir: Path, started: float, status: str) -> None:
    results.status = status
    results.finished = _now()
    results.total_seconds = (results.total_seconds or 0.0) + time.perf_counter() - started
    results_mod.save(results, run_dir)


def open_store(cfg: RunConfig, run_dir: Path, use_cache: bool):
    """The shared cache, or with `use_cache=False` one private to the run directory (so a
    resume still finds the run's own models, and nothing is shared with other runs). A run
    that has a private store keeps using it when resumed."""
    from quantbench.store import Store, default_root

    private = run_dir / PRIVATE_STORE
    return Store(private if not use_cache or private.is_dir() else default_root())
