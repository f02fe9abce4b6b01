"""Targets: where can a variant run? One registry entry per target, each with its rules.

- `mcu`: TF Lite Micro, really run (mcu.py) on the validation images in a worker: accuracy on
  TFLM's kernels, the minimum arena, the ops it refuses in its own words; judged against the
  `ram` and `flash` budgets (config `targets.mcu_ram`, `targets.mcu_flash`).
- `edgetpu`: Coral's published model requirements as a static check (static.py), not the
  compiler.
- `gpu`: the GPU delegate's compatibility as LiteRT's model analyzer reports it (gpu.py).
- `integer_only`: no float op and no float tensor between ops; quantize/dequantize counted.

`facts(path, ...)` measures what does not depend on budgets (cached by the `targets` stage);
`judge(facts, size, config)` turns them into one `TargetResult` per target, so changing a
budget never re-runs TFLM. The report and `recommend` read the results only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from quantbench.core.results import TargetResult

class McuParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ram: int | None = Field(None, gt=0)  # bytes for TFLM's tensor arena
    flash: int | None = Field(None, gt=0)  # bytes for the model file


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    params: type[BaseModel] = field(default=NoParams)

    def judge(self, facts: dict[str, Any], size_bytes: int | None,
              params: BaseModel) -> TargetResult:  # fmt: skip
        ok = facts.get("ok")
        return TargetResult(target=self.name, ok=ok, reasons=list(facts.get("reasons") or []),
                            figures=dict(facts.get("figures") or {}))  # fmt: skip


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB"


@dataclass(frozen=True)
class McuTarget(Target):
    def judge(self, facts: dict[str, Any], size_bytes: int | None,
              params: BaseModel) -> TargetResult:  # fmt: skip
        assert isinstance(params, McuParams)
        figures = dict(facts.get("figures") or {})
        if not facts.get("ok"):
            return TargetResult(target=self.name, ok=False,
                                reasons=list(facts.get("reasons") or []), figures=figures)
        arena = figures.get("arena_bytes")
        reasons = []
        if params.ram is not None and arena is not None and arena > params.ram:
            reasons.append(f"arena {_kib(arena)} > RAM budget {_kib(params.ram)}")
        if params.flash is not None and size_bytes is not None and size_bytes > params.flash:
            reasons.append(f"model {_kib(size_bytes)} > flash budget {_kib(params.flash)}")
        if reasons:
            return TargetResult(target=self.name, ok=False, reasons=reasons, figures=figures)
        said = [f"runs on TFLM in a {_kib(arena)} arena" if arena else "runs on TFLM"]
        if figures.get("accuracy") is not None:
            sample = (f" ({figures['images']} of {figures['sample_of']} photos)"
                      if figures.get("sample_of") else "")  # fmt: skip
            said.append(f"accuracy {figures['accuracy'] * 100:.1f}% on TFLM's kernels{sample}")
        return TargetResult(target=self.name, ok=True, reasons=["; ".join(said)], figures=figures)


TARGETS: dict[str, Target] = {t.name: t for t in (
    McuTarget("mcu", "TF Lite Micro, run on its reference kernels: arena, accuracy, refused ops",
              McuParams),
    Target("edgetpu", "Coral Edge TPU's published requirements (8-bit, static, ops), statically"),
    Target("gpu", "the GPU delegate's compatibility as LiteRT's model analyzer reports it"),
    Target("integer_only", "no float op and no float tensor between ops"),
)}  # fmt: skip



def static_facts(path) -> dict[str, dict[str, Any]]:
    """The checks read from the flatbuffer alone (no runtime, no TensorFlow)."""
    from quantbench.targets.graph import read_graph
    from quantbench.targets.static import check_edgetpu, check_integer_only

    graph = read_graph(path)
    out = {}
    for name, check in (("integer_only", check_integer_only), ("edgetpu", check_edgetpu)):
        ok, reasons, figures = check(graph)
        out[name] = {"ok": ok, "reasons": reasons, "figures": figures}
    return out


def mcu_facts(reply: dict[str, Any], labels=None, litert=None) -> dict[str, Any]:
    """The `tflm` worker reply as facts; accuracy from its predictions when labels are given,
    and the share of photos whose top-1 equals LiteRT's (`litert`, the same file's)."""
    if not reply.get("runs"):
        return {"ok": False, "reasons": [f"TFLM: {reply.get('reason') or 'refused the model'}"],
                "figures": {"arena_bytes": reply.get("arena_bytes")}}  # fmt: skip
    seconds = reply.get("seconds_per_image")
    figures: dict[str, Any] = {"arena_bytes": reply.get("arena_bytes"),
                               "ms_per_image": seconds * 1000 if seconds else None}
    predictions = reply.get("predictions")
    if predictions is not None and labels is not None and len(predictions) == len(labels):
        import numpy as np

        figures["accuracy"] = float(np.mean(np.asarray(predictions) == np.asarray(labels)))
        figures["images"] = len(predictions)
    if predictions is not None and litert is not None and len(predictions) == len(litert):
        import numpy as np

        # LiteRT (XNNPACK) and TFLM's reference kernels need not round alike: TFLM scored the
        # default preset's QAT int8_io file 6 photos of 551 higher than LiteRT did.
        figures["agreement_litert"] = float(np.mean(np.asarray(predictions) == np.asarray(litert)))
    return {"ok": True, "reasons": [], "figures": figures}


def judge_all(facts: dict[str, dict[str, Any]], size_bytes: int | None,
              params: dict[str, BaseModel] | None = None) -> dict[str, TargetResult]:  # fmt: skip
    """One TargetResult per target present in `facts`, in registry order."""
    params = params or {}
    out = {}
    for name, target in TARGETS.items():
        if name in facts:
            out[name] = target.judge(facts[name], size_bytes, params.get(name) or target.params())
    return out


def runs_on(row_targets: dict[str, TargetResult]) -> list[str]:
    """The targets a row passed, for the table's compact column."""
    return [name for name, result in row_targets.items() if result.ok]
