"""Atomic file writes: a temp file in the same folder, then rename, so a crash never leaves half a file.

Every OSError here (a full disk, a read-only file system, a folder where the file should go)
becomes one `MachineError` that says what the machine refused and names the path: these are
the writes of every run, and an errno is the only reliable way to tell a full disk apart.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from quantbench.core.errors import displayable, machine_error


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    tmp = None
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); results and reports are for everyone who may
        # read the folder, as with any file the user writes (the umask decides).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        # Name the file being written, not the temp file or a parent the OS happened to name.
        named = e.filename
        if named is None or Path(os.fsdecode(named)).name.startswith(f".{path.name}."):
            named = path
        raise machine_error(e, named) from e
    except BaseException:
        _discard(tmp)
        raise
    return path


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


def write_text(path: str | os.PathLike, text: str) -> Path:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # an undecodable file name in the text: escape, never fail
        data = displayable(text).encode("utf-8")
    return write_bytes(path, data)


def save_npy(path: str | os.PathLike, array) -> Path:
    """np.save for the workers' scratch inputs (in TMPDIR), with atomic.py's OSError messages:
    a full TMPDIR says so and names the file instead of failing the step that needed it."""
    import numpy as np

    try:
        np.save(path, array)
    except OSError as e:
        raise machine_error(e, path) from e
    return Path(path)
