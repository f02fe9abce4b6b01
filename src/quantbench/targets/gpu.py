"""The GPU delegate's compatibility, as LiteRT's own model analyzer reports it.

`ai_edge_litert` 2.3 ships the analyzer behind `tf.lite.experimental.Analyzer` as
`_pywrap_analyzer_wrapper.ModelAnalyzer(path, input_is_filepath, gpu_compatibility)`, which
returns the report as text (TensorFlow's wrapper only prints it). Calling it directly needs no
TensorFlow and no GPU. It checks each op against the GPU delegate's rules for this LiteRT
version; it cannot promise the delegate will run well, as its own last line says.

Measured here: the analyzer in ai-edge-litert 2.3 (and TensorFlow 2.21's) said "looks
compatible" for every file tried, including CUMSUM + ARG_MAX and a 5-D REDUCE_PROD feeding
SEGMENT_SUM, and neither wheel's binaries contain the "GPU COMPATIBILITY WARNING" text the
analyzer prints for incompatible ops elsewhere: a pass is "the analyzer raised nothing", which
is weaker than it sounds (docs/targets.md). Its warnings are parsed all the same, so a build
that has the checker gets named ops.
"""

from __future__ import annotations

import re
from pathlib import Path

_WARNING = re.compile(r"GPU COMPATIBILITY WARNING:?\s*(.*)", re.IGNORECASE)
_OP = re.compile(r"Op#(\d+)\s+([A-Z0-9_]+)")
COMPATIBLE = "looks compatible with GPU delegate"


def analyze(model: str | Path) -> str:
    """The analyzer's full text report for a .tflite file."""
    from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer

    return analyzer.ModelAnalyzer(str(model), True, True)


def parse_report(report: str) -> tuple[bool | None, list[str], dict]:
    """(compatible, reasons, figures) from the analyzer's text. None: the report says neither
    (an analyzer that changed its wording): judged unknown rather than guessed."""
    warnings: list[str] = []
    ops: list[str] = []
    last_op = None
    for line in report.splitlines():
        op = _OP.search(line)
        if op:
            last_op = op.group(2)
        match = _WARNING.search(line)
        if match:
            text = match.group(1).strip().rstrip(".")
            if op or (last_op and "Subgraph" not in line):
                ops.append(last_op or "?")
            warnings.append(text if not op else f"{op.group(2)}: {text}")
    if COMPATIBLE in report and not warnings:
        return True, ["LiteRT's analyzer: looks compatible with the GPU delegate (static, "
                      "not a run on a GPU)"], {"gpu_warnings": 0}  # fmt: skip
    if warnings:
        unique = list(dict.fromkeys(warnings))
        shown = unique[:3] + ([f"and {len(unique) - 3} more"] if len(unique) > 3 else [])
        return False, shown, {"gpu_warnings": len(warnings)}
    return None, ["the analyzer's report says neither compatible nor not"], {}


def gpu_request(payload: dict) -> dict:
    """The worker's `gpu` op: {model} -> {ok, reasons, figures}."""
    ok, reasons, figures = parse_report(analyze(payload["model"]))
    return {"ok": ok, "reasons": reasons, "figures": figures}
