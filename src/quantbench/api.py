"""The silent Python API: `quantbench.run(...)` returns a DataFrame and the run directory.

`quantbench.quantize(...)` is its twin for your own model, `quantbench.recommend(results)` picks the variant to ship. None prints: pass
`on_event=print_function(level, text)` to follow progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(preset: str = "default", *, config: str | Path | None = None, resume: str | Path | None = None,
        use_cache: bool = True, on_event=None, resources=None, **settings: Any):  # fmt: skip
    """Run the experiment of `preset` (+ a config file, + dotted config keys as keyword
    arguments with `__` for dots, e.g. `train__epochs=3`, or the CLI's flag names such as
    `schemes=["int8"]`). Returns (results DataFrame, run directory). `resources`
    (execute.Resources) says what the run may use: by default, this process's cores."""
    import io

    import pandas as pd

    from quantbench.engine import configure as config_mod
    from quantbench.ml import quiet
    from quantbench.engine.context import silent
    from quantbench.core.results import to_csv

    overrides: dict[str, Any] = {}
    for key, value in settings.items():
        dotted = config_mod.FLAG_KEYS.get(key, key.replace("__", "."))
        overrides[dotted] = value
    if resume is not None:
        cfg = config_mod.for_resume(resume, overrides, config)
    else:
        cfg = config_mod.resolve(preset, config, overrides)
    quiet.import_tensorflow()
    from quantbench.commands import run as runner

    results, run_dir = runner.run(cfg, resume_dir=Path(resume) if resume else None,
                                  use_cache=use_cache, resources=resources, emit=on_event or silent)  # fmt: skip
    return pd.read_csv(io.StringIO(to_csv(results))), run_dir


def quantize(model, data: str | Path | None = None, schemes: list[str] | str | None = None,
             *, config: str | Path | None = None, use_cache: bool = True, on_event=None,
             resources=None, **options):  # fmt: skip
    """Quantize a Keras model (a path, or an in-memory tf_keras Model) with every scheme and
    evaluate each variant on the photos in `data`. Returns (results DataFrame, run dir). A
    float32 `.tflite` path is taken too: it is the float32 row, and AI Edge Quantizer's recipes
    (`aeq:recipe=...`) are made from it (docs/byo.md).

    Options are the CLI's flags with underscores: labels, image_size, scaling, channel_order,
    eval_split, check, qat_epochs, unsafe, custom_objects, threads, latency_runs, output_dir, ...
    Silent: pass `on_event=fn(level, text)` to follow progress. `resources` (execute.Resources)
    says what the run may use: by default, this process's cores.
    """
    import io as io_mod

    import pandas as pd

    from quantbench.commands.quantize import build_config, run_quantize
    from quantbench.core.results import to_csv
    from quantbench.engine.context import silent
    from quantbench.ml import quiet

    if isinstance(schemes, str):
        schemes = [s.strip() for s in schemes.split(",") if s.strip()]
    if isinstance(options.get("threads"), int):
        options["threads"] = [options["threads"]]
    in_memory = not isinstance(model, (str, Path))
    cfg, size_given = build_config(
        None if in_memory else model, {**options, "data": data, "schemes": schemes}, config
    )
    quiet.import_tensorflow()
    results, run_dir = run_quantize(cfg, model if in_memory else None, size_given,
                                    use_cache=use_cache, resources=resources,
                                    emit=on_event or silent)  # fmt: skip
    return pd.read_csv(io_mod.StringIO(to_csv(results))), run_dir


def recommend(results, constraints=None):
    """The variant to ship under `constraints` (config.RecommendConfig), from a run's results."""
    from quantbench.analysis.recommend import recommend as choose

    return choose(results, constraints)
