"""Cache keys and the fingerprints that go into them: data, library versions, machine.

A key is the sha256 of canonical JSON (sorted keys, no whitespace) of everything that decides a
stage's output: the stage's name and parameters, its parent's key, the data's fingerprint and
the library versions. Equal inputs give equal keys in any process, on any machine; changing any
one input changes the key. Nothing here imports TensorFlow (or numpy, until data is hashed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

# Bump when what a key covers changes, so that old entries stop matching instead of lying.
KEY_VERSION = 1
KEY_CHARS = 64  # the full sha256; the CLI shows a prefix

LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy")


def _plain(value: Any) -> Any:
    """`value` as plain JSON types, so equal configurations give equal bytes."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"cache key parameters need string keys, got {k!r}")
            out[k] = _plain(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "model_dump"):  # a pydantic config section
        return _plain(value.model_dump(mode="json"))
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return _plain(value.item())
    raise TypeError(f"cannot put {type(value).__name__} {value!r} in a cache key")


def canonical_json(value: Any) -> str:
    # allow_nan=False: NaN != NaN, so a NaN parameter could never be looked up again.
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def store_key(stage: str, params: Mapping[str, Any], parent: str | None, data: str | None,
              versions: Mapping[str, str | None]) -> str:  # fmt: skip
    """The content address of a stage's output (64 hex characters)."""
    payload = {"key_version": KEY_VERSION, "stage": stage, "params": params, "parent": parent,
               "data": data, "versions": versions}  # fmt: skip
    return _digest(payload)[:KEY_CHARS]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 of quantbench's own .py files.

    The version number alone is not enough: an editable install keeps "0.1.0" through every
    change to train.py, and a cached model trained by older code would be reused silently.
    Hashing the ~40 source files costs about a millisecond.
    """
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:24]


def library_versions() -> dict[str, str | None]:
    """Versions of everything that shapes a trained or converted model (None: not installed)."""
    from quantbench.core.version import __version__

    versions = {name: _version(name) for name in LIBRARIES}
    versions["quantbench"] = __version__
    versions["quantbench-source"] = source_digest()
    return versions


def machine_description() -> dict[str, Any]:
    """What a latency figure depends on besides the model: CPU, cores, runtime."""
    from quantbench.core.environment import cpu_model
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        usable = os.cpu_count() or 1
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count() or 1,
        "usable_cores": usable,  # a container or taskset can pin us to fewer
        "machine": platform.machine(),
        "system": platform.system(),
        "litert": _version("ai-edge-litert"),
    }


def machine_fingerprint() -> str:
    """24 hex characters; equal on machines whose latency figures are comparable.

    It cannot see load: a figure measured while something else ran is reused all the same.
    """
    return _digest(machine_description())[:24]


def data_fingerprint(items: Iterable[Any]) -> str:
    """sha256 over arrays (dtype, shape, bytes) or byte strings, in order; 64 hex characters.

    3000 images of 128x128x3 uint8 (147 MB) take 0.15 s here (sha256 runs at about 1 GB/s
    with the CPU's SHA extensions; blake2b took 0.22 s on the same data).
    """
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = memoryview(item).cast("B")
            h.update(b"bytes:" + str(data.nbytes).encode() + b"\0")
            h.update(data)
            continue
        import numpy as np

        array = np.ascontiguousarray(item)
        if array.dtype.hasobject:
            raise TypeError("cannot fingerprint an array of Python objects")
        header = f"array:{array.dtype.str}:{array.shape}\0"
        h.update(header.encode())
        h.update(memoryview(array).cast("B") if array.size else b"")
    return h.hexdigest()


def files_fingerprint(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> str:
    """sha256 over files' names relative to `root` and their contents, in sorted order.

    Cheaper than decoding: the class folder (the label) is in each name, and the bytes are
    read, never decoded. Use this to key a stage before its images are loaded.
    """
    root = Path(root)
    named = []
    for p in paths:
        full = root / p  # an absolute p stays itself
        named.append((full.relative_to(root).as_posix(), full))
    h = hashlib.sha256()
    for name, full in sorted(named):
        with open(full, "rb") as f:
            file_hash = hashlib.file_digest(f, "sha256").digest()
        h.update(name.encode("utf-8") + b"\0" + file_hash)
    return h.hexdigest()
