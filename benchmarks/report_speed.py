"""Report rebuild speed: `quantbench report RUN_DIR` as a user runs it (a fresh process).

Target: under 5 seconds, start-up included, with no TensorFlow import. Measured side by side
with the bare interpreter start (`python -c pass`) and `import quantbench`, so the figure
can be read on a slow or busy machine too. Without RUN_DIR a large constructed run is used
(3 repeats, QAT rows, a failed row, 5 classes); pass a real run directory to time that.

    python benchmarks/report_speed.py [RUN_DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, median

BUDGET_SECONDS = 5.0


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--repeats", type=int, default=5, help="timed rebuilds (median shown)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir.resolve() if args.run_dir else None
        if run_dir is None:
            sys.path.insert(0, str(ROOT))
            from tests.fixtures_results import make_results, make_run_dir

            run_dir = make_run_dir(Path(tmp) / "run", make_results(repeats=3))
        python = sys.executable
        report = [python, "-m", "quantbench", "report", str(run_dir)]
        timed(report)  # warm the file cache and .pyc files once
        first = (run_dir / "report.html").read_text(encoding="utf-8")
        bare = median([timed([python, "-c", "pass"]) for _ in range(args.repeats)])
        package = median([timed([python, "-c", "import quantbench"]) for _ in range(args.repeats)])
        rebuild = median([timed(report) for _ in range(args.repeats)])
        again = (run_dir / "report.html").read_text(encoding="utf-8")

    same = _strip_stamp(first) == _strip_stamp(again)
    print(f"run: {args.run_dir or 'constructed (3 repeats, QAT, a failed row)'}")
    print(f"python -c pass          {bare:6.2f} s")
    print(f"import quantbench       {package:6.2f} s")
    print(f"quantbench report       {rebuild:6.2f} s  (median of {args.repeats})")
    print(f"report / budget         {rebuild / BUDGET_SECONDS:6.2f}   (budget {BUDGET_SECONDS:g} s; "
          f"{'within' if rebuild < BUDGET_SECONDS else 'OVER'})")  # fmt: skip
    print(f"report / bare python    {rebuild / bare:6.1f}x")
    print(f"same report each time   {same}  ({len(again) / 1024:.0f} KiB)")


def _strip_stamp(html: str) -> str:
    # The footer says when the page was generated; everything else must be identical.
    return html.split("<footer", 1)[0]


if __name__ == "__main__":
    main()
