"""`quantbench export RUN_DIR -o DIR`: one variant of a run, ready to ship (commands/export.py)."""

from __future__ import annotations

from pathlib import Path

import click

from quantbench.cli.app import cli  # the group


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--variant", help="The variant to export (default: the run's recommendation).")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True,
              help="The folder to write: new or empty (or an earlier export, with --force).")
@click.option("--force", is_flag=True,
              help="Replace an earlier export in the folder (never other files).")
def export(run_dir: Path, variant: str | None, output: Path, force: bool) -> None:
    """Write a variant's .tflite file, labels.txt and MODEL_CARD.md to a folder.

    The card says how to feed the model (input size, scaling, channel order), its accuracy
    with intervals and its difference from the float model, size, latency per thread count,
    the targets it passes, how it was made, the versions and the run's config: every figure
    from the run's results.json. Reads no TensorFlow and measures nothing again.
    """
    from quantbench.commands.export import export as export_variant
    from quantbench.core.errors import displayable
    from quantbench.present.console import line, out, warn

    done = export_variant(run_dir, output, variant=variant, force=force)
    why = "recommended" if done.chose == "recommended" else "by name"
    out.print(line(("exported", "bold green"), f" {done.variant} ({why}) to ",
                   displayable(done.folder) + ("  (replaced the earlier export)" if done.replaced
                                               else "")), highlight=False)  # fmt: skip
    out.print(line(f"  {done.model.name}  {done.size_bytes:,} bytes"), highlight=False)
    out.print(line(f"  {done.labels.name}  {done.classes} classes"), highlight=False)
    out.print(line(f"  {done.card.name}"), highlight=False)
    if done.chose == "recommended" and done.reason:
        out.print(line(("  " + done.reason, "dim")), highlight=False)
    elif done.recommended and done.recommended != done.variant:
        out.print(line((f"  the run recommends {done.recommended}", "dim")), highlight=False)
    for message in done.warnings:
        warn(message)
