"""A store entry and the rules of its layout, which the store (store/__init__.py) follows:
the entry format, its checks and how a file is written into one.

An entry is a folder `entries/<key>/` with `entry.json` (stage, meta, created, and each file's
size and sha256) and the stage's files. Keys are hex digests; file names are plain names.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
ENTRY_FILE = "entry.json"
BYTES = (bytes, bytearray, memoryview)
KEY_PATTERN = re.compile(r"^[0-9a-f]{24,64}$")
STAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Entry:
    key: str
    stage: str
    dir: Path
    meta: dict[str, Any]
    created: datetime
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {size, sha256}

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise KeyError(f"cache entry {self.key[:12]} has no file {name!r}")
        return self.dir / name

    def link_or_copy(self, name: str, dest: str | os.PathLike) -> Path:
        """Put file `name` at `dest`: a hard link when on the same filesystem, else a copy.

        `dest` is replaced atomically if it exists. Raises FileNotFoundError if the entry was
        cleared meanwhile (`Store.materialize` turns that into a miss).
        """
        source, dest = self.path(name), Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        try:
            try:
                os.link(source, tmp)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    raise
                shutil.copyfile(source, tmp)  # another filesystem, or links not allowed
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


@dataclass(frozen=True)
class EntrySummary:
    key: str
    stage: str
    label: str
    size_bytes: int
    created: datetime
    used: datetime  # last get(); what `clear(older_than_days=...)` looks at


class Damaged(Exception):
    def __init__(self, reason: str, remove: bool = True) -> None:
        super().__init__(reason)
        self.remove = remove


def check_key(key: str) -> None:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValueError(f"not a cache key: {key!r} (expected 24-64 lowercase hex characters)")


def check_name(name: str) -> None:
    if not name or name != Path(name).name or name.startswith(".") or name == ENTRY_FILE:
        raise ValueError(f"not a valid file name for a cache entry: {name!r}")


def write_file(dest: Path, source: Path | bytes) -> dict[str, Any]:
    """Write and fsync `dest`, hashing on the way; a crash after rename cannot leave it empty."""
    h = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        if isinstance(source, BYTES):
            out.write(source)
            h.update(source)
            size = memoryview(source).nbytes
        else:
            with open(source, "rb") as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return {"size": size, "sha256": h.hexdigest()}


def upgrade_entry(doc: dict[str, Any]) -> dict[str, Any]:
    """An entry.json of any schema version in today's shape (no older versions exist yet)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("schema_version"), int):
        raise ValueError("no schema_version")
    # When SCHEMA_VERSION becomes 2, convert version-1 documents here, field by field.
    # A newer version is read as far as today's fields go; if that fails it is left alone,
    # since the quantbench that wrote it can still use it.
    return doc
