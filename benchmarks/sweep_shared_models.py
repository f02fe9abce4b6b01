"""A sweep whose trials share trained models against the same trials as independent runs.

    python benchmarks/sweep_shared_models.py [--preset default] [--schemes float32,int8]
        [--max-images-per-class N] [--epochs N] [--targets]

The trials: calibration images 100 and 300 x MobileNetV2 alpha 0.35 and 0.5 (the preset's
settings otherwise; no model transforms, target checks off unless --targets: what a
calibration sweep compares is the converted files). Two trials share each trained model.
The sweep (`quantbench sweep --no-cache`: a store private to the sweep, shared by its trials) trains each model once and, for the
conversions that do not read the calibration images (float32, dynamic range, float16),
converts and measures them once; the baseline is four `quantbench run --no-cache` commands,
each training, converting and measuring everything itself. Both are whole CLI processes
timed by wall clock, one after the other in one run of this script. Target: sweep <= 0.6x.
It also checks that each trial's float Keras accuracy equals its independent run's, and
prints the share of the independent runs' time spent training: what sharing models can save.
At smoke scale (400 photos, 64 px) training was 10 s of a 45 s run and the ratio 0.89; the
saving is the training of half the trials, so the default preset (training most of a run, as
in real use) is this benchmark's default.
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

CALIBRATION = (100, 300)
ALPHAS = (0.35, 0.5)


def quantbench(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "quantbench", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        sys.exit(f"quantbench {args[0]} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def float_accuracy(run_dir: Path) -> float:
    rows = json.loads((run_dir / "results.json").read_text())["variants"]
    return next(r["accuracy"] for r in rows if r["variant"] == "keras_float")


def training_seconds(run_dir: Path) -> float:
    records = json.loads((run_dir / "results.json").read_text()).get("training") or []
    return sum(e.get("seconds") or 0.0 for r in records for e in r.get("epochs") or [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--schemes", default="float32,int8")
    parser.add_argument("--max-images-per-class", type=int, default=None)  # None: the preset's
    parser.add_argument("--epochs", type=int, default=None)  # None: the preset's
    parser.add_argument("--targets", action="store_true", help="keep the target checks on")
    options = parser.parse_args()
    common: dict = {"convert.schemes": options.schemes.split(","), "transforms": [],
                    "targets.check": options.targets}  # fmt: skip
    if options.max_images_per_class is not None:
        common["data.max_images_per_class"] = options.max_images_per_class
    if options.epochs is not None:
        common["train.epochs"] = options.epochs
    flags = [f"--set={key}={json.dumps(value)}" for key, value in common.items()]
    with tempfile.TemporaryDirectory(prefix="qb-sweep-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "KERAS_HOME": str(keras_home()), "QUANTBENCH_CACHE": str(tmp / "cache"),
               "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}  # fmt: skip
        sweep_file = tmp / "shared.yaml"
        sweep_file.write_text(json.dumps({  # JSON is YAML
            "base": {"preset": options.preset, "set": common},
            "axes": {"convert.calibration_images": list(CALIBRATION), "model.alpha": list(ALPHAS)},
        }))  # fmt: skip
        sweep_s = quantbench(["sweep", str(sweep_file), "--no-cache", "--output-dir",
                              str(tmp / "sweep")], env)  # fmt: skip
        state = json.loads((tmp / "sweep" / "sweep-shared" / "sweep.json").read_text())
        by_values = {(t["values"]["convert.calibration_images"], t["values"]["model.alpha"]): t
                     for t in state["trials"]}  # fmt: skip
        independent_s, trained_s, same = 0.0, 0.0, True
        for calibration in CALIBRATION:
            for alpha in ALPHAS:
                name = f"cal{calibration}-a{alpha}"
                seconds = quantbench(["run", "--preset", options.preset, "--no-cache", *flags,
                                      "--calibration-images", str(calibration),
                                      "--alpha", str(alpha), "--name", name,
                                      "--output-dir", str(tmp / "runs")], env)  # fmt: skip
                independent_s += seconds
                run_dir = next((tmp / "runs").glob(f"*-{name}"))
                trained_s += training_seconds(run_dir)
                trial = by_values[(calibration, alpha)]
                a, b = float_accuracy(Path(trial["run_dir"])), float_accuracy(run_dir)
                same &= a == b
                print(f"  {name}: independent run {seconds:.1f} s; trial {trial['seconds']:.1f} s; "
                      f"float accuracy {a:.4f} (sweep) vs {b:.4f} (run)")
    print(f"sweep of 4 trials: {sweep_s:.1f} s; 4 independent `run --no-cache`: "
          f"{independent_s:.1f} s; ratio {sweep_s / independent_s:.3f} (target <= 0.6)")
    print(f"training: {trained_s:.1f} s of the independent runs' {independent_s:.1f} s "
          f"({trained_s / independent_s:.0%}); settings: preset {options.preset}, {common}")
    print(f"float accuracies equal trial by trial: {same}")


if __name__ == "__main__":
    main()
