"""The silent Python API: `quantbench.run(...)` returns a DataFrame and the run directory.

`quantbench.quantize(...)` (quantize.py) is its twin for your own model. Neither prints: pass
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

    from quantbench import config as config_mod, quiet
    from quantbench.execute import silent
    from quantbench.results import to_csv

    overrides: dict[str, Any] = {}
    for key, value in settings.items():
        dotted = config_mod.FLAG_KEYS.get(key, key.replace("__", "."))
        overrides[dotted] = value
    if resume is not None:
        cfg = config_mod.for_resume(resume, overrides, config)
    else:
        cfg = config_mod.resolve(preset, config, overrides)
    quiet.import_tensorflow()
    from quantbench import runner

    results, run_dir = runner.run(cfg, resume_dir=Path(resume) if resume else None,
                                  use_cache=use_cache, resources=resources, emit=on_event or silent)  # fmt: skip
    return pd.read_csv(io.StringIO(to_csv(results))), run_dir
