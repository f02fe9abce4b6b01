"""`quantbench sweep`: many configurations, locally or on Ray (sweep.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from quantbench.cli.app import (  # the group and the options the commands share
    _VERBOSE, cli,
)


# --- sweep --------------------------------------------------------------------------------


@cli.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine (one trial at a time, or a few with --parallel); "
              "ray: trials as Ray tasks (pip install 'quantbench[ray]').")
@click.option("--address", help="Ray cluster address (default: start Ray on this machine).")
@click.option("--max-trials", type=click.IntRange(1), help="Run only the first N trials of the grid.")
@click.option("--cpus-per-trial", type=click.IntRange(1), help="Cores each trial declares "
              "(default: 4 locally, at most the machine's; 1 on Ray).")
@click.option("--parallel", type=click.IntRange(1), help="Local engine: trials at once "
              "(default: cores / cpus-per-trial).")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("runs"),
              show_default=True, help="The sweep directory goes here (sweep-NAME).")
@click.option("--no-cache", is_flag=True, help="Do not share the global model cache: the sweep "
              "keeps its own store (its trials still share trained models).")  # fmt: skip
def sweep(sweep_file: Path, engine: str, address: str | None, max_trials: int | None,
          cpus_per_trial: int | None, parallel: int | None, output_dir: Path, no_cache: bool) -> None:  # fmt: skip
    """Run many configurations: a base plus axes over config keys, each trial a full run.

    Running the same sweep again skips finished trials and resumes a killed one."""
    from quantbench.ml import quiet
    from quantbench.commands import sweep as sweep_mod
    from quantbench.present import show_event, show_sweep

    spec = sweep_mod.load_spec(sweep_file)
    sweep_dir = sweep_mod.sweep_dir_of(spec, output_dir)
    sweep_mod.trials_of(spec, sweep_dir, max_trials)  # every trial validated before Ray starts
    cache = str(sweep_dir / ".store") if no_cache else None
    if engine == "ray":
        from quantbench.commands.sweep_engines import RayEngine

        runner = RayEngine(spec.command, cache, address=address, cpus_per_trial=cpus_per_trial or 1)
    else:
        from quantbench.commands.sweep_engines import LocalEngine

        runner = LocalEngine(spec.command, cache, parallel=parallel, cpus_per_trial=cpus_per_trial)
        if runner.slots == 1:
            quiet.import_tensorflow(verbose=_VERBOSE["on"])
    state, sweep_dir = sweep_mod.run_sweep(spec, output_dir=output_dir, engine=runner,
                                           max_trials=max_trials, emit=show_event)  # fmt: skip
    show_sweep(state, sweep_dir)
    if state.counts()["failed"]:
        sys.exit(1)
