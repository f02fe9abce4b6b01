"""A second run of the same config on a warm cache against the cold first run.

    python benchmarks/warm_cache.py [--preset default] [--rounds 1] [-- extra run flags]

Each round runs `quantbench run` twice with the same config into a fresh cache
(QUANTBENCH_CACHE in a temp folder): cold (trains, converts, measures everything and fills the
cache) and then warm (the same config: every model, file, accuracy and, on this machine,
latency comes from the cache). Both are whole CLI processes timed by wall clock, side by side
in one run of this script. Target: warm <= 0.25x cold. It also checks that the warm run's
accuracies equal the cold run's, variant by variant.
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


def run(args: list[str], cache: Path, out: Path, name: str) -> tuple[float, dict]:
    env = {**os.environ, "QUANTBENCH_CACHE": str(cache), "KERAS_HOME": str(keras_home())}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "quantbench", "run", *args, "--output-dir",
                           str(out), "--name", name], env=env, cwd=ROOT, capture_output=True,
                          text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"quantbench run failed:\n{done.stderr[-2000:]}")
    run_dir = next(out.glob(f"*-{name}"))
    return seconds, json.loads((run_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="more `quantbench run` flags (after --)")
    options = parser.parse_args()
    args = ["--preset", options.preset, *options.extra]
    print(f"quantbench run {' '.join(args)}: cold (empty cache) then warm (same config)")
    ratios = []
    for round_ in range(options.rounds):
        with tempfile.TemporaryDirectory(prefix="qb-warm-") as tmp:
            cache, out = Path(tmp) / "cache", Path(tmp) / "runs"
            cold_s, cold = run(args, cache, out, f"cold{round_}")
            warm_s, warm = run(args, cache, out, f"warm{round_}")
        same = all(a["accuracy"] == b["accuracy"] and a["variant"] == b["variant"]
                   for a, b in zip(cold["variants"], warm["variants"], strict=True))  # fmt: skip
        reused = sum(1 for v in warm["variants"] if v.get("reused"))
        ratios.append(warm_s / cold_s)
        print(f"round {round_ + 1}: cold {cold_s:.1f} s, warm {warm_s:.1f} s, ratio "
              f"{warm_s / cold_s:.3f}; {reused} of {len(warm['variants'])} variants reused; "
              f"accuracies equal: {same}")  # fmt: skip
    print(f"warm/cold: {min(ratios):.3f}..{max(ratios):.3f} (target <= 0.25)")


if __name__ == "__main__":
    main()
