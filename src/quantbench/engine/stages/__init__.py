"""The stages of a run (engine/stage.py says what a stage is).

- model.py: the base model (trained, or the user's) and each transform's model;
- reference.py: the Keras model's own predictions (the reference row);
- convert.py: a model's .tflite files, in parallel converter workers;
- accuracy.py, latency.py, targets.py: the measurements of one converted file.

`MEASUREMENTS` is the order the executor measures every converted file in. Adding a
measurement is one stage module and one entry here; the executor names none of them.
"""

from __future__ import annotations

from quantbench.engine.stages.accuracy import ACCURACY
from quantbench.engine.stages.latency import LATENCY
from quantbench.engine.stages.targets import TARGETS_STAGE

MEASUREMENTS = (ACCURACY, LATENCY, TARGETS_STAGE)

__all__ = ["MEASUREMENTS"]
