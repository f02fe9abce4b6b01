"""The registry of TF Lite conversion schemes.

Adding a scheme is one `Scheme(...)` entry in `SCHEMES` below; the converter, the CLI
(`quantbench schemes`, `--schemes`) and the tests parametrized over the registry pick it up.
A scheme says only how to configure a `TFLiteConverter`; which trained model it is applied to
(the float baseline, a QAT model) is decided by the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from quantbench.errors import ConfigError
from quantbench.suggest import did_you_mean

OpsSet = Literal["builtins", "int8", "int16x8"]


@dataclass(frozen=True)
class Scheme:
    name: str
    policy: str  # the label a user knows it by, as in the seed's table
    description: str
    optimization: str | None = None  # a member of tf.lite.Optimize
    float16_weights: bool = False
    needs_representative_dataset: bool = False
    ops: OpsSet = "builtins"
    io_dtype: Literal["float32", "int8"] = "float32"
    default: bool = True  # run when the user does not pick schemes

    def configure(self, converter: Any, representative_dataset: Callable | None) -> None:
        """Set this scheme's options on a `tf.lite.TFLiteConverter`."""
        import tensorflow as tf

        if self.optimization:
            converter.optimizations = [getattr(tf.lite.Optimize, self.optimization)]
        if self.float16_weights:
            converter.target_spec.supported_types = [tf.float16]
        if self.needs_representative_dataset:
            if representative_dataset is None:
                raise ValueError(f"scheme {self.name!r} needs a representative dataset")
            converter.representative_dataset = representative_dataset
        if self.ops == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        elif self.ops == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        if self.io_dtype == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme("float32", "None", "float32 model, converted without optimization"),
        Scheme(
            "dynamic_range",
            "Optimize.DEFAULT",
            "int8 weights, float activations quantized on the fly (post-training dynamic range)",
            optimization="DEFAULT",
        ),
        Scheme(
            "float16",
            "float16",
            "float16 weights, float32 compute (half the size)",
            optimization="DEFAULT",
            float16_weights=True,
        ),
        Scheme(
            "int8",
            "full int8",
            "full-integer int8 weights and activations, float input/output",
            optimization="DEFAULT",
            needs_representative_dataset=True,
            ops="int8",
        ),
        Scheme(
            "int8_io",
            "full int8, int8 I/O",
            "full-integer int8 with int8 input/output (Edge TPU, microcontrollers)",
            optimization="DEFAULT",
            needs_representative_dataset=True,
            ops="int8",
            io_dtype="int8",
        ),
        Scheme(
            "int16x8",
            "int16x8",
            "int16 activations, int8 weights (more accurate, reference kernels only)",
            optimization="DEFAULT",
            needs_representative_dataset=True,
            ops="int16x8",
        ),
        Scheme(
            "optimize_for_size",
            "Optimize.OPTIMIZE_FOR_SIZE",
            "deprecated alias of Optimize.DEFAULT, kept to check the seed's claim",
            optimization="OPTIMIZE_FOR_SIZE",
            default=False,
        ),
        Scheme(
            "optimize_for_latency",
            "Optimize.OPTIMIZE_FOR_LATENCY",
            "deprecated alias of Optimize.DEFAULT, kept to check the seed's claim",
            optimization="OPTIMIZE_FOR_LATENCY",
            default=False,
        ),
    ]
}

DEFAULT_SCHEMES: tuple[str, ...] = tuple(name for name, s in SCHEMES.items() if s.default)


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ConfigError(
            f"unknown scheme {name!r}{did_you_mean(name, SCHEMES)}",
            tip="`quantbench schemes` lists the schemes",
        ) from None
