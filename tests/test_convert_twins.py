"""Two parametrizations of one scheme in one model are two files (issue: convert_all keyed its
outputs by the scheme's name, so `selective:base=int8` and `selective:base=int8_per_tensor`
of one model shared one output path and one outcome)."""

import numpy as np

from quantbench.techniques.convert import convert_all
from quantbench.techniques.schemes import SCHEMES
from tests.conftest import tiny_classifier


def test_two_parametrizations_of_one_scheme_convert_to_two_files(tmp_path):
    model = tiny_classifier()
    calibration = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    per_channel = SCHEMES.spec("selective", base="int8", denylist=[])
    per_tensor = SCHEMES.spec("selective", base="int8_per_tensor", denylist=[])
    first, second = convert_all(model, [per_channel, per_tensor], calibration, tmp_path)
    assert first.error is None and second.error is None
    assert first.path != second.path
    assert first.path.read_bytes() != second.path.read_bytes()
    # Per-channel weights carry one scale per output channel, per-tensor ones a single scale.
    assert _most_scales(first.path) > 1
    assert _most_scales(second.path) == 1


def _most_scales(path) -> int:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    return max(len(d["quantization_parameters"]["scales"]) for d in details)
