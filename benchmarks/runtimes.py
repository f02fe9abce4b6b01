"""Latency: LiteRT's Interpreter vs its CompiledModel, side by side, with the same predictions.

For every scheme's .tflite, at each thread count, `--repeats` times, alternating which runtime
goes first (drifting load from other processes hits both alike):
  interpreter = quantbench.measure.latency.measure(..., runtime="interpreter")  (fresh worker process)
  compiled    = quantbench.measure.latency.measure(..., runtime="compiled")     (fresh worker process)
Prints per scheme and thread count the median over repeats of each runtime's median, their
ratio, and the most CPU other processes used during any of those figures (busy.py; `*` marks a
scheme whose figures were flagged busy). Then, on `--images` real photos, whether the two
runtimes predict the same top-1 class for every photo and the largest output difference.

`--burners N` runs N CPU-spinning processes (`while True: pass`) during the figures: what a
busy machine does to each runtime, and what other_cpu reads then (busy.BUSY_MARGIN's evidence).

    python benchmarks/runtimes.py [RUN_DIR] [--threads 1,2] [--repeats 3] [--schemes ...]
                                  [--keep DIR] [--images 200] [--burners 0]

RUN_DIR: take the .tflite files of a `quantbench run` directory; without it, build them as
latency_vs_litert.py does (untrained-head MobileNetV2 alpha 0.35 at 128 px, every scheme).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import keras_home, median
from latency_vs_litert import build_models, run_dir_models

from quantbench.commands import bench
from quantbench.measure import latency, litert
from quantbench.ml.preprocess import Preprocessing
from quantbench.measure.runtimes import open_session

RUNTIMES = ("interpreter", "compiled")


def photos(count: int, size: int) -> np.ndarray:
    return bench.load_inputs(keras_home() / "datasets" / "flower_photos", Preprocessing(size), count)


def outputs(runtime: str, path: Path, images: np.ndarray) -> np.ndarray:
    session = open_session(runtime, path, 1, True)
    out = []
    for k in range(len(images)):
        session.set_input(litert.quantize_input(images[k : k + 1], session.input_detail))
        session.invoke()
        out.append(litert.dequantize_output(session.output(), session.output_detail)[0])
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--schemes", help="comma-separated (default: every scheme)")
    parser.add_argument("--keep", type=Path, help="build the models here and keep them")
    parser.add_argument("--images", type=int, default=200, help="photos for the predictions check")
    parser.add_argument("--burners", type=int, default=0, help="CPU-spinning processes meanwhile")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    from quantbench.techniques.schemes import SCHEMES

    wanted = args.schemes.split(",") if args.schemes else SCHEMES.names()
    with tempfile.TemporaryDirectory(prefix="quantbench-runtimes-bench-") as tmp:
        if args.run_dir:
            paths = {k: v for k, v in run_dir_models(args.run_dir).items() if k in wanted}
        else:
            out = args.keep or Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            existing = {s: out / f"{s}.tflite" for s in wanted if (out / f"{s}.tflite").is_file()}
            todo = [s for s in wanted if s not in existing]
            paths = {**existing, **(build_models(out, todo) if todo else {})}
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                   for _ in range(args.burners)]  # fmt: skip
        try:
            rows = measure(paths, threads, args.repeats)
        finally:
            for p in burners:
                p.kill()
        print(f"\nload average {os.getloadavg()[0]:.1f}; {args.burners} burner(s); medians over "
              f"{args.repeats} repeats, ms; others: most CPU other processes used during a "
              f"figure, cores; * a figure was flagged busy\n")  # fmt: skip
        head = "| scheme |" + "".join(f" {t}t interpreter / compiled ms | ratio | others |"
                                      for t in threads)  # fmt: skip
        print(head + " same top-1 | max abs diff |")
        print("|---" * (1 + 3 * len(threads) + 2) + "|")
        for name, path in paths.items():
            cells = []
            for t in threads:
                fig = rows[(name, t)]
                i, c = median(fig["interpreter"]), median(fig["compiled"])
                mark = "*" if fig["busy"] else ""
                cells.append(f" {i:.3g} / {c:.3g} | {i / c:.2f} | {fig['others']:.2f}{mark} |")
            images = photos(args.images, latency.input_shape(path)[1])
            a, b = outputs("interpreter", path, images), outputs("compiled", path, images)
            same = (a.argmax(1) == b.argmax(1)).mean()
            print(f"| {name} |{''.join(cells)} {same:.1%} of {len(images)} | "
                  f"{np.abs(a - b).max():.2g} |")  # fmt: skip


def measure(paths: dict[str, Path], threads: list[int], repeats: int) -> dict:
    rows = {}
    inputs_by_size: dict[int, np.ndarray] = {}
    for name, path in paths.items():
        size = latency.input_shape(path)[1]
        inputs = inputs_by_size.setdefault(size, photos(16, size))
        for t in threads:
            fig = {"interpreter": [], "compiled": [], "others": 0.0, "busy": False}
            for k in range(repeats):
                for runtime in (RUNTIMES if k % 2 == 0 else RUNTIMES[::-1]):
                    r = latency.measure(path, inputs, t, runtime=runtime)
                    fig[runtime].append(r.median_ms)
                    fig["others"] = max(fig["others"], r.other_cpu or 0.0)
                    fig["busy"] |= r.busy
            rows[(name, t)] = fig
            print(f"  {name} {t}t: interpreter {median(fig['interpreter']):.3g} ms, compiled "
                  f"{median(fig['compiled']):.3g} ms, others up to {fig['others']:.2f} cores",
                  file=sys.stderr)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
