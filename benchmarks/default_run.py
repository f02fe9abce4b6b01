"""The default preset's cold run (an empty cache, the venv present) and where its time goes.

Runs `quantbench run --preset default` in a fresh process with a fresh cache, then prints the
run's own breakdown (results.json `stage_seconds`: each stage's compute time, nested stages
not double-counted; reading images, report, other) in seconds and as shares of the total, and
the non-training share (everything but the `model` stage, which trains the float and QAT
models). Usage:

    python benchmarks/default_run.py [--preset default] [--set KEY=VALUE ...] [--json]

`--set` passes config overrides through, e.g. `--set targets.tflm_images=null` to score every
photo on TF Lite Micro as before the sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, keras_home  # noqa: E402

# The stages of a run, grouped as the breakdown names them.
GROUPS = {
    "training": ("model",),
    "conversion": ("convert", "selective"),
    "evaluation": ("reference", "accuracy"),
    "latency": ("latency",),
    "targets": ("targets",),
    "report": ("report",),
}


def breakdown(stage_seconds: dict[str, float], total: float) -> dict[str, float]:
    """Seconds per group; `other` is what no group names (reading images, start-up, waiting)."""
    out = {group: sum(stage_seconds.get(s, 0.0) for s in stages) for group, stages in GROUPS.items()}
    out["other"] = max(0.0, total - sum(out.values()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", dest="assignments", action="append", default=[])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qb-default-run-") as tmp:
        env = {**os.environ, "QUANTBENCH_CACHE": str(Path(tmp) / "cache"),
               "KERAS_HOME": str(keras_home())}  # fmt: skip
        command = [sys.executable, "-m", "quantbench", "run", "--preset", args.preset,
                   "--output-dir", str(Path(tmp) / "runs")]  # fmt: skip
        for assignment in args.assignments:
            command += ["--set", assignment]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"the run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        results_file = next((Path(tmp) / "runs").glob("*/results.json"))
        results = json.loads(results_file.read_text())
    total = results["total_seconds"]
    groups = breakdown(results.get("stage_seconds") or {}, total)
    non_training = 1 - groups["training"] / total
    summary = {"preset": args.preset, "wall_seconds": wall, "total_seconds": total,
               "stages": groups, "non_training_share": non_training,
               "accuracies": {v["variant"]: v.get("accuracy") for v in results["variants"]},
               "cpu": (results.get("environment") or {}).get("cpu_model")}  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print(f"{args.preset} preset, cold: {total:.0f} s in the run ({wall:.0f} s with the process "
          f"start), on {summary['cpu']}")
    for group, seconds in groups.items():
        print(f"  {group:<11} {seconds:7.1f} s  {seconds / total:6.1%}")
    print(f"non-training share: {non_training:.1%}")


if __name__ == "__main__":
    main()
