"""The small exception hierarchy. The CLI turns any of these into `ERROR ...` plus a tip, exit 2."""

from __future__ import annotations

import errno
import os


class QuantbenchError(Exception):
    """A problem the user can fix: bad input, bad config, a missing file."""

    exit_code = 2

    def __init__(self, message: str, tip: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tip = tip


class ConfigError(QuantbenchError):
    """A config value, flag or preset is invalid."""


class DataError(QuantbenchError):
    """The image folder is missing, empty or unusable."""


class ModelError(QuantbenchError):
    """A model or its weights cannot be built, found or loaded."""


class ConversionError(QuantbenchError):
    """A model cannot be converted to TF Lite at all (single schemes are recorded, not raised)."""


class DependencyError(QuantbenchError):
    """An optional dependency is not installed."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's first non-empty line, cut at `limit` characters; its type when it says
    nothing (some TensorFlow and Pillow errors have an empty message)."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


class StoreError(QuantbenchError):
    """The machine cannot read or write the model cache (permissions, read-only, disk full)."""
def read_text_file(path, what: str, error: type[QuantbenchError] = QuantbenchError) -> str:
    """A user's text file (config, labels) as str, or one line saying why it is not one:
    missing, unreadable, binary, or not UTF-8 (a Latin-1 file names the first bad byte)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {displayable(path)}", tip=f"check the path of the {what}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise machine_error(e, path) from e
    if b"\0" in data[:8192]:
        raise error(f"{what} {displayable(path)} is not a text file (it holds binary data)",
                    tip=f"pass the {what} itself, a UTF-8 text file")  # fmt: skip
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(
            f"{what} {displayable(path)} is not UTF-8 text: byte 0x{data[e.start]:02x} on "
            f"line {line} (Latin-1 or another legacy encoding?)",
            tip="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None


class MachineError(QuantbenchError):
    """The machine, not the input: a full disk, a permission, a read-only file system."""


# errno -> (what happened, what to do). The path is named by `machine_error`.
_ERRNO_MESSAGES = {
    errno.ENOSPC: ("the disk is full", "free some space on that file system, or pass "
                   "--output-dir (or set TMPDIR) to a folder on another disk"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space, or write elsewhere"),
    errno.EROFS: ("the file system is read-only", "pass --output-dir to a writable folder"),
    errno.EACCES: ("permission denied", "check the permissions of that path, or write elsewhere"),
    errno.EPERM: ("operation not permitted", "check the permissions of that path"),
    errno.ENOTDIR: ("a file stands where a folder is needed",
                    "pass a folder path, or remove that file"),
    errno.EEXIST: ("a file stands where a folder is needed", "pass a folder path"),
    errno.EISDIR: ("a folder stands where a file is to be written", "name a file (inside it)"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the file name is too long", "use a shorter --name or --output-dir"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and retry"),
    errno.ENOMEM: ("out of memory", "close other programs, or use smaller settings"),
    errno.EIO: ("an input/output error (a failing disk?)", "check the disk"),
}


def machine_error(error: OSError, path: object = None) -> MachineError:
    """One line for an OSError: what the machine refused, on which path, and what to do.

    The errno decides the words, so a full disk reads "the disk is full" wherever it happens
    (results.json, a .tflite file, the scaled images in TMPDIR) instead of surfacing as
    whatever the failing step would otherwise claim."""
    where = path if path is not None else error.filename
    code = error.errno
    if code is None and (says_disk_full(str(error)) or _no_space_at(where)):
        code = errno.ENOSPC  # numpy's np.save reports a short write without an errno
    what, tip = _ERRNO_MESSAGES.get(code, (error.strerror or f"cannot write ({error})",
                                           "check that path and the disk it is on"))
    if where is None:
        return MachineError(f"{what} ({error.strerror or error})", tip)
    return MachineError(f"{what}: {displayable(where)}", tip)


def _no_space_at(path: object) -> bool:
    """Whether the file system holding `path` (or its nearest existing parent) is full."""
    import shutil
    from pathlib import Path

    if path is None:
        return False
    folder = Path(os.fsdecode(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < 64 * 1024
    except OSError:
        return False


def displayable(name: object) -> str:
    """A file name or path as text that any terminal and any UTF-8 file can hold.

    File names are bytes on Linux; Python decodes the undecodable ones to lone surrogates
    (surrogateescape), which UTF-8 writers refuse (results.json, the terminal). They become
    backslash escapes (the byte 0xff -> the four characters \\xff): the name stays
    recognisable and every writer accepts it. Valid names are returned unchanged."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that did not come from surrogateescape
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


DISK_FULL_SIGNS = ("No space left on device", "Disk quota exceeded", "the disk is full")


def says_disk_full(message: str | None) -> bool:
    """Whether an error text from another process or library (the TF Lite converter, a
    worker's traceback) reports a full disk: there the errno is gone, its words remain."""
    return bool(message) and any(sign in message for sign in DISK_FULL_SIGNS)
