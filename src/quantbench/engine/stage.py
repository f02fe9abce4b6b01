"""The Stage protocol: how every product of a run is made, kept and found again.

A stage says what its product depends on (`key`), how to make it (`compute`, or
`compute_many` for a batch), and how it is kept in the store and read back (`encode`,
`decode`). It never sees the store: the executor (executor.py) computes the key, looks it up,
runs the stage only on a miss, stores what `encode` returns, and marks the row's reuse. This is
the shape of Olive's engine, where passes never see the cache.

A product's key is made of the stage's name, its parameters, its parent's key (a .tflite's
parent is its model, an accuracy's parent is the .tflite) and a fingerprint of the data it
read, with the library versions (store/keys.py). So a second run of one config redoes nothing,
and a resumed run continues where it stopped.

Measurements (accuracy, latency, targets: stages/) are stages with two more hooks, `applies`
and `apply` (fill the variant's row from the product), and may have `finish`, called once at
the end of the run (the latency stage re-measures figures taken on a busy machine there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from quantbench.core.products import Key, Stored  # noqa: F401 - the protocol's vocabulary

Job = TypeVar("Job")
Product = TypeVar("Product")


@dataclass
class Produced(Generic[Product]):
    product: Product
    key: str
    reused: bool  # read from the store, not computed
    entry: Any = None  # the store entry it is kept in (None: not kept)


class Stage(Protocol[Job, Product]):
    name: str  # the store's stage name, part of every key
    reuse_label: str  # the word a row's `reused` list gets when the product came from the store

    def key(self, job: Job) -> Key: ...

    def compute(self, job: Job) -> Product: ...

    def encode(self, product: Product, job: Job) -> Stored | None:
        """How the store keeps it; None: not kept (a crash or a hang may not repeat)."""

    def decode(self, entry: Any, job: Job) -> Product: ...


class Measurement(Stage[Job, Product], Protocol):
    """A stage that measures one converted file and fills in its row."""

    def applies(self, job: Job) -> bool: ...

    def apply(self, row: Any, product: Product, job: Job) -> None: ...
