"""Latency: quantbench.measure.latency.measure vs LiteRT's own benchmark tool, side by side.

For every scheme's .tflite, at the same thread count, `--repeats` times, alternating which of
the two goes first (so drifting load from other processes hits both alike):
  ours   = quantbench.measure.latency.measure (fresh worker process, real photos cycled, median)
  litert = `litert-benchmark` (ai_edge_litert.tools.benchmark_litert_model) with the same
           number of warm-up and timed runs; run as its own code with the 2-decimal rounding
           of its JSON turned off (0.01 ms is ~5% of an int8 invoke here)
Prints per scheme: the median over repeats of each tool's median, the ratio ours/litert
(the median of the per-repeat ratios and its range) and the repeat-to-repeat coefficient of
variation of each tool's median. Targets: ratio 0.9-1.1 for every scheme, CV of ours <= 5%.
"cpu ms" is our median process CPU time per invoke: at 1 thread it matches the wall-clock
median unless other processes took the core, so a gap between the two (and a steady "CV cpu"
next to a jumpy "CV ours") says a miss is the machine's load, not the method. "CV ratio" is
the repeat-to-repeat CV of ours/litert measured back to back: drift of the host's speed over
minutes (seen here: the same model 20% faster ten minutes later, in both tools) cancels in it.

    python benchmarks/latency_vs_litert.py [RUN_DIR] [--threads 1] [--repeats 5]

RUN_DIR: take the .tflite files of a `quantbench run` directory; without it, build them from
an untrained-head MobileNetV2 alpha 0.35 at 128 px (ImageNet trunk weights from KERAS_HOME),
converted with every scheme of the registry.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import keras_home, median, mobilenet

from quantbench.commands import bench
from quantbench.measure import latency
from quantbench.core.environment import cpu_model
from quantbench.ml.preprocess import Preprocessing

IMAGE_SIZE = 128
# The tool's own code, unchanged except that the JSON keeps full precision.
LITERT = (
    "import sys; import ai_edge_litert.tools.benchmark_litert_model as tool; "
    "tool.round = lambda x, n=None: x; sys.argv = ['litert-benchmark'] + sys.argv[1:]; tool.main()"
)


def photos(count: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """`count` real flower photos, taken in turn from each class, preprocessed to -1..1."""
    root = keras_home() / "datasets" / "flower_photos"
    return bench.load_inputs(root, Preprocessing(size), count)


def build_models(out: Path, schemes: list[str]) -> dict[str, Path]:
    import tensorflow as tf

    from quantbench.techniques.schemes import SCHEMES

    model = mobilenet(image_size=IMAGE_SIZE, alpha=0.35)
    calibration = photos(32)

    def representative_dataset():
        for image in calibration:
            yield [image[None]]

    paths = {}
    for name in schemes:
        started = time.perf_counter()
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        SCHEMES[name].configure(converter, representative_dataset)
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(converter.convert())
        print(f"  converted {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return paths


def run_dir_models(run_dir: Path) -> dict[str, Path]:
    paths = {p.stem: p for p in sorted(run_dir.rglob("*.tflite"))}
    if not paths:
        sys.exit(f"no .tflite files under {run_dir}")
    return paths


def litert_benchmark(path: Path, threads: int, runs: int, warmup_runs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-c", LITERT, "--model", str(path), "--num_threads",
                   str(threads), "--num_runs", str(runs), "--warmup_runs", str(warmup_runs),
                   "--result_json", str(out)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if not out.is_file():
            raise RuntimeError(f"litert-benchmark failed on {path.name}: {done.stderr[-400:]}")
        return json.loads(out.read_text())


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--schemes", help="comma-separated (default: every scheme)")
    parser.add_argument("--keep", type=Path, help="build the models here and keep them")
    parser.add_argument("--random-inputs", action="store_true",
                        help="feed ours random -1..1 inputs, as litert-benchmark does")
    args = parser.parse_args()

    from quantbench.techniques.schemes import SCHEMES

    wanted = args.schemes.split(",") if args.schemes else SCHEMES.names()
    with tempfile.TemporaryDirectory(prefix="quantbench-latency-bench-") as tmp:
        if args.run_dir:
            paths = {k: v for k, v in run_dir_models(args.run_dir).items()
                     if not args.schemes or k in wanted}  # fmt: skip
        else:
            out = args.keep or Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            existing = {s: out / f"{s}.tflite" for s in wanted if (out / f"{s}.tflite").is_file()}
            todo = [s for s in wanted if s not in existing]
            paths = {**existing, **(build_models(out, todo) if todo else {})}
            paths = {s: paths[s] for s in wanted}
        inputs_by_size: dict[int, np.ndarray] = {}

        def inputs_for(path: Path) -> np.ndarray:
            size = latency.input_shape(path)[1]  # a run directory's models may not be 128 px
            if size not in inputs_by_size:
                inputs_by_size[size] = photos(16, size)
                if args.random_inputs:
                    inputs_by_size[size] = np.random.default_rng(0).uniform(
                        -1, 1, inputs_by_size[size].shape).astype(np.float32)  # fmt: skip
            return inputs_by_size[size]

        load_start = os.getloadavg()[0]
        print(f"device {cpu_model()}, {os.cpu_count()} cores, {args.threads} thread(s), XNNPACK on,"
              f" {args.repeats} repeats, ours fed {'random' if args.random_inputs else 'real'}"
              f" inputs; load average at start {load_start:.2f}")  # fmt: skip
        header = (f"{'scheme':22} {'ours ms':>9} {'litert ms':>10} {'ratio':>6} {'ratio range':>13}"
                  f" {'CV ours':>8} {'CV litert':>9} {'CV ratio':>8} {'runs':>6} {'cpu ms':>8}"
                  f" {'CV cpu':>7}"
                  f"  verdict")  # fmt: skip
        print(header)
        print("-" * len(header))
        failures = []
        for name, path in paths.items():
            ours, theirs, ratios, runs, cpu = [], [], [], [], []
            warm = latency.WARMUP_RUNS
            inputs = inputs_for(path)
            for repeat in range(args.repeats):
                order = ("ours", "litert") if repeat % 2 == 0 else ("litert", "ours")
                figure = None
                reply = None
                for who in order:
                    if who == "ours":
                        figure = latency.measure(path, inputs, args.threads)
                    else:
                        # Same counts as ours: ours decides them (min runs and min seconds).
                        count = figure.runs if figure else (runs[-1] if runs else latency.MIN_RUNS)
                        warm = figure.warmup_runs if figure else warm
                        reply = litert_benchmark(path, args.threads, count, warm)
                # When litert went first it used the previous repeat's counts.
                ours.append(figure.median_ms)
                theirs.append(reply["latency"]["median_ms"])
                runs.append(figure.runs)
                cpu.append(figure.cpu_ms)
                ratios.append(ours[-1] / theirs[-1])
            ratio = median(ratios)
            cv_ours, cv_theirs = cv(ours), cv(theirs)
            verdict = []
            if not 0.9 <= ratio <= 1.1:
                verdict.append("ratio off target")
            if cv_ours > 0.05:
                # Said, not excused: whether litert-benchmark's medians moved as much in the
                # same minutes (the machine) or only ours did (the method).
                verdict.append("CV off target" + (" (litert's too)" if cv_theirs > 0.05 else ""))
            failures += [f"{name}: {v}" for v in verdict]
            print(f"{name:22} {median(ours):9.3f} {median(theirs):10.3f} {ratio:6.2f} "
                  f"{min(ratios):6.2f}-{max(ratios):<6.2f} {cv_ours:8.1%} {cv_theirs:9.1%} "
                  f"{cv(ratios):8.1%} "
                  f"{median(runs):6.0f} {median(cpu):8.3f} {cv(cpu):7.1%}  "
                  f"{', '.join(verdict) or 'ok'}", flush=True)  # fmt: skip
        verdict = "all met" if not failures else "missed: " + "; ".join(failures)
        print(f"load average at end {os.getloadavg()[0]:.2f} (1 min); targets: ratio 0.9-1.1, "
              f"CV of ours <= 5%; {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
