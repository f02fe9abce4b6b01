"""What a run's stages share: the resources the caller granted, the config, the data scaled
once, the store, the event sink, and the worker processes started on first use.

`Context` is what a stage may see; the executor (executor.py) is the only code that talks to
its store. `BaseSource` says where the plan's base model comes from: trained here (`run`) or
the user's file (`quantize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.core.results import RunResults, TrainingResult, VariantResult

Emit = Callable[[str, str], None]  # (level: "step" | "info" | "warn", text)
LATENCY_IMAGES = 16  # real validation images the latency loop cycles through


def silent(level: str, text: str) -> None:
    """The default event sink: the library says nothing unless the caller listens."""


def key_of(stage: str, params: dict[str, Any], parent: str | None = None,
           data: str | None = None) -> str:  # fmt: skip
    """A store key for this quantbench and these libraries (store/keys.py)."""
    from quantbench.store import library_versions, store_key

    return store_key(stage, params, parent, data, library_versions())


@dataclass(frozen=True)
class Resources:
    """What the run may use; decided by the caller (the CLI, a sweep's scheduler), not read
    from the machine deep inside."""

    cores: int
    convert_workers: int
    # Where latency figures come from and how they are taken: a sweep names the node and hands
    # in a per-node lock, so two trials never time models on one node at once (sweep_engines).
    node: str | None = None
    latency_slot: Callable[[], Any] | None = field(default=None, compare=False)

    def latency_guard(self) -> Any:
        """A context manager held while latency is measured (a no-op outside a sweep)."""
        from contextlib import nullcontext

        return self.latency_slot() if self.latency_slot is not None else nullcontext()

    @classmethod
    def detect(cls) -> Resources:
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return cls(cores=cores or 1, convert_workers=cores or 1)


class BaseSource:
    """Where the plan's base model comes from: trained here (`run`) or the user's (`quantize`)."""

    label = "base model"
    model_file: str | None = None  # a file name in the run dir that holds the base model
    cacheable = True  # its trained weights go to the store (a user's model is its own file)
    trains = True  # `run` trains it; transforms may also build it afresh (QAT recipe fresh)

    def key_params(self, repeat: int) -> dict[str, Any]:
        raise NotImplementedError

    def produce(self, ctx: Context, repeat: int) -> tuple[Any, TrainingResult | None]:
        raise NotImplementedError

    def rebuild(self, ctx: Context, repeat: int) -> Any:
        """The untrained architecture the store's cached weights load into (None: not cached)."""
        return None

    def for_transforms(self, model: Any, ctx: Context, results: RunResults) -> Any:
        """The model the transforms start from (e.g. flattened for QAT); a ModelError here
        fails the transformed model's variants, not the run."""
        return model

    def describe_reference(self, row: VariantResult) -> None:
        """Fill in what only the source knows (the user's file size)."""

    def variants(self, specs: list[Any]) -> list[Any]:
        """The variants of the plan this source can make, in plan order (a .tflite has no
        Keras model: no reference row, no transform, only schemes made from a .tflite). A plan
        without the reference row takes the row of the file the source supplies as its
        reference (agreement, paired differences)."""
        return specs

    def supplied_file(self, scheme: Any, repeat: int) -> Path | None:
        """The .tflite this source already is for `scheme` (a TechniqueSpec) of its base model,
        taken instead of converting (a .tflite source: its float32 file); None: converted."""
        return None


@dataclass
class Context:
    """What every stage shares: the config, the data scaled once, the resources, the sinks."""

    cfg: Any  # config.RunConfig
    run_dir: Path
    dataset: Any  # data.Dataset
    store: Any  # store.Store: the executor's alone; stages never call it
    resources: Resources
    emit: Emit = silent
    val_inputs: np.ndarray = field(default=None)  # type: ignore[assignment]
    calibration_inputs: np.ndarray = field(default=None)  # type: ignore[assignment]
    data_key: str = ""
    calibration_key: str = ""
    latency_key: str = ""
    reference_predictions: dict[int, np.ndarray] = field(default_factory=dict)  # by repeat
    # The row those predictions are from, when not the Keras model's (a .tflite source: its
    # own float32 file's row); paired differences name it.
    reference_name: str | None = None
    # Worker processes and other resources stages open on first use, closed with the run
    # (by name: the accuracy stage's evaluation worker, the targets stage's TFLM worker).
    services: dict[str, Any] = field(default_factory=dict)
    # What a stage's `finish` hook is to revisit at the end of the run, by stage name (the
    # latency stage: rows with a figure timed on a busy machine).
    later: dict[str, list] = field(default_factory=dict)

    @property
    def preprocessing(self):
        from quantbench.ml.preprocess import Preprocessing

        data = self.cfg.data
        return Preprocessing(data.image_size, data.scaling, data.channel_order)

    def prepare(self) -> None:
        """Scale the validation and calibration images once and fingerprint the data."""
        from quantbench.ml.data import calibration_indices
        from quantbench.store import data_fingerprint

        d = self.dataset
        picks = calibration_indices(len(d.train_images), self.cfg.convert.calibration_images,
                                    self.cfg.data.split_seed)  # fmt: skip
        self.val_inputs = self.preprocessing.scale(d.val_images)
        self.calibration_inputs = self.preprocessing.scale(d.train_images[picks])
        data = self.cfg.data
        self.data_key = data_fingerprint(
            [d.train_images, d.train_labels, d.val_images, d.val_labels,
             np.frombuffer("\n".join(d.classes).encode("utf-8", "surrogateescape"), np.uint8),
             np.frombuffer(f"{data.scaling}/{data.channel_order}".encode(), np.uint8)]
        )  # fmt: skip
        self.calibration_key = data_fingerprint([self.calibration_inputs])
        self.latency_key = data_fingerprint([self.val_inputs[:LATENCY_IMAGES]])

    def service(self, name: str, start: Callable[[], Any]) -> Any:
        """The run's `name` service (a worker process), started by `start()` on first use."""
        if name not in self.services:
            self.services[name] = start()
        return self.services[name]

    def close(self) -> None:
        for service in self.services.values():
            service.close()
        self.services.clear()
