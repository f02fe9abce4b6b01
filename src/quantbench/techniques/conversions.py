"""The conversions registry: how a trained Keras model becomes a .tflite file.

Adding a conversion is one entry in `CONVERSIONS` below, with its typed parameters; the
converter worker, the CLI (`--schemes`, `quantbench techniques`), the config and the tests
parametrized over the registry pick it up. A conversion says only how to configure a
`TFLiteConverter`; which model it is applied to (the float baseline, a transform's output) is
the plan's business (plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from quantbench.techniques import NoParams, Params, Registry, Technique, TechniqueSpec

OpsSet = Literal["builtins", "int8", "int16x8"]


@dataclass(frozen=True)
class Scheme(Technique):
    policy: str = ""  # the label a user knows it by, as in the seed's table
    optimization: str | None = None  # a member of tf.lite.Optimize
    float16_weights: bool = False
    needs_representative_dataset: bool = False
    ops: OpsSet = "builtins"
    io_dtype: Literal["float32", "int8"] = "float32"

    def configure(self, converter: Any, representative_dataset: Callable | None,
                  params: Params | None = None) -> None:
        """Set this conversion's options (with its parameters) on a `tf.lite.TFLiteConverter`."""
        import tensorflow as tf

        if self.optimization:
            converter.optimizations = [getattr(tf.lite.Optimize, self.optimization)]
        if self.float16_weights:
            converter.target_spec.supported_types = [tf.float16]
        if self.needs_representative_dataset:
            if representative_dataset is None:
                raise ValueError(f"conversion {self.name!r} needs a representative dataset")
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


CONVERSIONS: Registry[Scheme] = Registry("scheme", "--schemes", [
    Scheme("float32", "float32 model, converted without optimization", policy="None"),
    Scheme("dynamic_range",
           "int8 weights, float activations quantized on the fly (post-training dynamic range)",
           policy="Optimize.DEFAULT", optimization="DEFAULT"),
    Scheme("float16", "float16 weights, float32 compute (half the size)", policy="float16",
           optimization="DEFAULT", float16_weights=True),
    Scheme("int8", "full-integer int8 weights and activations, float input/output",
           policy="full int8", optimization="DEFAULT", needs_representative_dataset=True,
           ops="int8"),
    Scheme("int8_io", "full-integer int8 with int8 input/output (Edge TPU, microcontrollers)",
           policy="full int8, int8 I/O", optimization="DEFAULT",
           needs_representative_dataset=True, ops="int8", io_dtype="int8"),
    Scheme("int16x8", "int16 activations, int8 weights (more accurate, reference kernels only)",
           policy="int16x8", optimization="DEFAULT", needs_representative_dataset=True,
           ops="int16x8"),
    Scheme("optimize_for_size", "deprecated alias of Optimize.DEFAULT, kept to check the seed's claim",
           policy="Optimize.OPTIMIZE_FOR_SIZE", optimization="OPTIMIZE_FOR_SIZE", default=False),
    Scheme("optimize_for_latency",
           "deprecated alias of Optimize.DEFAULT, kept to check the seed's claim",
           policy="Optimize.OPTIMIZE_FOR_LATENCY", optimization="OPTIMIZE_FOR_LATENCY",
           default=False),
])  # fmt: skip


def conversion_of(spec: TechniqueSpec) -> tuple[Scheme, Params]:
    """The entry and its typed parameters (what the converter worker applies)."""
    return CONVERSIONS.get(spec.name), CONVERSIONS.params_of(spec)


__all__ = ["CONVERSIONS", "NoParams", "Scheme", "conversion_of"]
