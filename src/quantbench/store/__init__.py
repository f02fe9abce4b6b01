"""The content-addressed store (model cache) that makes runs resumable and repeat runs fast.

    $QUANTBENCH_CACHE/        default $XDG_CACHE_HOME/quantbench or ~/.cache/quantbench
        CACHEDIR.TAG          tells backup tools to skip the folder
        entries/<key>/        one complete entry: entry.json (stage, files' size and sha256,
                              meta, created) and the stage's files; keys: fingerprint.store_key
        tmp/                  entries being written or removed

An entry is written into tmp/ and renamed into entries/ in one step; the rename fails when the
key is there already, so of two writers of one key the first wins and the second gets the
first's entry. Clearing renames an entry out of entries/ before deleting it. A reader thus sees
a whole entry or none, and reads never raise: a missing, unreadable, truncated or altered entry
(a file's sha256 no longer matches) is a miss, and a damaged one is removed. Writes that fail
because of the machine (permissions, read-only, disk full) raise StoreError naming the folder.

Files reach a run folder by hard link (a copy across filesystems): the link survives the cache
deleting its name. The run must replace such a file (temp file + rename, as atomic.py does),
never rewrite it in place, or the cached copy changes too (get() then drops it as altered).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantbench.core.errors import StoreError
from quantbench.store.keys import (  # noqa: F401 - re-exported: one import for callers
    data_fingerprint, files_fingerprint, library_versions, machine_description,
    machine_fingerprint, store_key,
)  # fmt: skip

from quantbench.store.entry import (  # noqa: F401 - Entry and EntrySummary are public here
    BYTES, KEY_PATTERN, STAGE_PATTERN, ENTRY_FILE, SCHEMA_VERSION, Entry, EntrySummary, check_key,
    check_name, Damaged, upgrade_entry, write_file,
)  # fmt: skip

_STALE_TMP_SECONDS = 3600.0  # a write takes seconds; an hour-old temp folder is a crashed one
_MACHINE_TIP = ("this is a problem of the machine, not of your input: free disk space or fix "
                "the folder's permissions, set QUANTBENCH_CACHE to a writable folder, or run "
                "with --no-cache")  # fmt: skip


def default_root() -> Path:
    """`$QUANTBENCH_CACHE`, else `$XDG_CACHE_HOME/quantbench`, else `~/.cache/quantbench`."""
    configured = os.environ.get("QUANTBENCH_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "quantbench").absolute()


class Store:
    """A model cache rooted at `root` (default: `default_root()`); safe across processes."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser().absolute() if root is not None else default_root()
        self.entries_dir = self.root / "entries"
        self.tmp_dir = self.root / "tmp"

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # --- reading: never raises, a damaged entry is a miss --------------------------------------

    def get(self, key: str, verify: bool = True) -> Entry | None:
        """The entry stored under `key`, or None. `verify` re-hashes its files (about 1 GB/s)."""
        check_key(key)
        folder = self.entries_dir / key
        try:
            entry = self._read(folder, key, verify)
        except Damaged as damaged:
            if damaged.remove:
                self._discard(folder)
            return None
        if entry is not None:
            try:
                os.utime(folder)  # "last used", for clear(older_than_days=...)
            except OSError:
                pass  # a read-only cache still serves hits
        return entry

    def get_json(self, key: str) -> dict[str, Any] | None:
        """A small record stored by `put_json` (e.g. a measured accuracy), or None."""
        entry = self.get(key)
        return None if entry is None else entry.meta.get("record")

    def materialize(self, key: str, files: dict[str, str | os.PathLike]) -> Entry | None:
        """Link (or copy) the entry's files to their destinations {name: dest}; None on a miss."""
        entry = self.get(key)
        if entry is None or not set(files) <= set(entry.files):
            return None
        try:
            for name, dest in files.items():
                entry.link_or_copy(name, dest)
        except FileNotFoundError:  # cleared by another process between get and link
            return None
        return entry

    def _read(self, folder: Path, key: str, verify: bool) -> Entry | None:
        try:
            text = (folder / ENTRY_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            if not folder.exists():
                return None  # a plain miss (or cleared meanwhile)
            raise Damaged("no entry.json") from None
        except UnicodeDecodeError:
            raise Damaged("entry.json is not text") from None
        except OSError as e:  # permissions, I/O: we could not remove it either
            raise Damaged(f"unreadable: {e}", remove=False) from None
        try:
            doc = json.loads(text)
        except ValueError:
            raise Damaged("entry.json is not JSON") from None
        version = doc.get("schema_version") if isinstance(doc, dict) else None
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        try:
            doc = upgrade_entry(doc)
            files, meta = doc["files"], doc["meta"]
            if doc["key"] != key or not isinstance(files, dict) or not isinstance(meta, dict):
                raise ValueError("inconsistent entry.json")
            entry = Entry(key=key, stage=str(doc["stage"]), dir=folder, meta=meta,
                          created=datetime.fromisoformat(doc["created"]),
                          files={n: {"size": int(f["size"]), "sha256": str(f["sha256"])}
                                 for n, f in files.items()})  # fmt: skip
        except (Damaged, ValueError, KeyError, TypeError, AttributeError) as e:
            # A newer quantbench's entry may be fine for that quantbench: leave it.
            raise Damaged(f"bad entry.json: {e}", remove=not newer) from None
        for name, info in entry.files.items():
            self._check_file(folder / name, info, verify)
        return entry

    @staticmethod
    def _check_file(path: Path, info: dict[str, Any], verify: bool) -> None:
        try:
            if path.stat().st_size != info["size"]:
                raise Damaged(f"{path.name} has the wrong size")
            if verify:
                with open(path, "rb") as f:
                    if hashlib.file_digest(f, "sha256").hexdigest() != info["sha256"]:
                        raise Damaged(f"{path.name} was altered")
        except FileNotFoundError:
            raise Damaged(f"{path.name} is missing") from None
        except OSError as e:
            raise Damaged(f"{path.name} unreadable: {e}", remove=False) from None

    def _discard(self, folder: Path, strict: bool = False) -> int | None:
        """Rename out of entries/, then delete: the bytes removed, or None if already gone or
        the machine refused (`strict` raises StoreError then)."""
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            doomed = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="removing-"))
        except OSError as e:
            if strict:
                raise _machine_error(self.root, e) from e
            return None
        try:
            os.rename(folder, doomed / "entry")
        except OSError as e:
            doomed.rmdir()
            if strict and e.errno != errno.ENOENT:
                raise _machine_error(self.root, e) from e
            return None
        size = _folder_size(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return size

    # --- writing -------------------------------------------------------------------------------

    def put(self, key: str, stage: str, files: dict[str, Path | bytes] | None = None,
            meta: dict[str, Any] | None = None) -> Entry:  # fmt: skip
        """Store `files` ({name: source path or bytes}, copied) and `meta` under `key`.

        Atomic; if `key` is already stored (e.g. another process won the race), the stored
        entry is returned and the new files are dropped. Machine failures raise StoreError.
        """
        check_key(key)
        if not STAGE_PATTERN.match(stage):
            raise ValueError(f"not a stage name: {stage!r} (lowercase letters, digits, _ . -)")
        files = dict(files or {})
        for name, source in files.items():
            check_name(name)
            if not isinstance(source, BYTES) and not os.path.isfile(source):
                raise FileNotFoundError(f"cannot cache {name!r}: {source} is not a file")
        meta = dict(meta or {})
        meta_text = json.dumps(meta)  # a TypeError here is the caller's: meta must be JSON
        tmp = None
        try:
            self._prepare()
            tmp = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix=f"{key[:12]}-"))
            infos = {name: write_file(tmp / name, source) for name, source in files.items()}
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            doc = {"schema_version": SCHEMA_VERSION, "key": key, "stage": stage,
                   "created": created, "files": infos, "meta": json.loads(meta_text)}  # fmt: skip
            write_file(tmp / ENTRY_FILE, json.dumps(doc, indent=1).encode("utf-8"))
            entry = self._install(tmp, key)
            tmp = None
            return entry
        except OSError as e:
            raise _machine_error(self.root, e) from e
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def put_json(self, key: str, stage: str, record: dict[str, Any], label: str | None = None,
                 ) -> Entry:  # fmt: skip
        """Store a small JSON record (e.g. accuracy measured on a cached .tflite)."""
        meta: dict[str, Any] = {"record": record}
        if label is not None:
            meta["label"] = label
        return self.put(key, stage, {}, meta)

    def _prepare(self) -> None:
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():  # https://bford.info/cachedir/
            tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n"
                           "# This folder is quantbench's model cache; "
                           "`quantbench cache clear` empties it.\n")  # fmt: skip

    def _install(self, tmp: Path, key: str) -> Entry:
        final = self.entries_dir / key
        for _ in range(2):  # a second try only after get() removed a damaged entry
            try:
                os.rename(tmp, final)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                existing = self.get(key)  # lost the race: the first writer's entry stands
                if existing is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
                    return existing
                continue
            entry = self.get(key, verify=False)  # just written and fsynced
            if entry is None:  # cleared by another process in between
                raise StoreError(f"cache entry {key[:12]} in {self.root} vanished as it was "
                                 "written", tip="was `quantbench cache clear` running?")
            return entry
        raise StoreError(f"cache entry {key[:12]} in {self.root} cannot be read or replaced",
                         tip=f"remove {final} and try again")  # fmt: skip

    # --- listing and clearing ------------------------------------------------------------------

    def list(self) -> list[EntrySummary]:
        """Every readable entry, oldest use first (damaged ones are skipped, not removed)."""
        summaries = []
        for folder in self._folders():
            try:
                entry = self._read(folder, folder.name, verify=False)
                used = datetime.fromtimestamp(folder.stat().st_mtime, tz=timezone.utc)
            except (Damaged, OSError):
                continue
            if entry is None:
                continue
            label = entry.meta.get("label")
            summaries.append(EntrySummary(key=entry.key, stage=entry.stage,
                                          label=label if isinstance(label, str) else "",
                                          size_bytes=_folder_size(folder), created=entry.created,
                                          used=used))  # fmt: skip
        return sorted(summaries, key=lambda s: (s.used, s.key))

    def select(self, stage: str | None = None, older_than_days: float | None = None,
               ) -> list[EntrySummary]:  # fmt: skip
        """The entries `clear` with the same arguments would remove (damaged ones aside)."""
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
        return [s for s in self.list()
                if (stage is None or s.stage == stage)
                and (cutoff is None or s.used.timestamp() < cutoff)]  # fmt: skip

    def clear(self, stage: str | None = None, older_than_days: float | None = None,
              ) -> tuple[int, int]:  # fmt: skip
        """Remove matching entries, plus damaged ones and crashed writes. Returns (count, bytes).

        `older_than_days` looks at last use, so a model reused yesterday stays.
        """
        count = size = 0
        for summary in self.select(stage, older_than_days):
            freed = self._discard(self.entries_dir / summary.key, strict=True)
            if freed is not None:
                count, size = count + 1, size + freed
        swept, swept_size = self.sweep()
        return count + swept, size + swept_size

    def sweep(self) -> tuple[int, int]:
        """Remove damaged entries (nobody can use them) and crashed writes. (count, bytes)."""
        count = size = 0
        for folder in self._folders():
            try:
                self._read(folder, folder.name, verify=False)
            except Damaged as damaged:
                if damaged.remove and (freed := self._discard(folder)) is not None:
                    count, size = count + 1, size + freed
        self._sweep_tmp()
        return count, size

    def total_size(self) -> int:
        return sum(s.size_bytes for s in self.list())

    def _folders(self) -> list[Path]:
        try:
            return [p for p in self.entries_dir.iterdir() if KEY_PATTERN.match(p.name) and p.is_dir()]
        except OSError:  # no cache yet, or unreadable: nothing listed
            return []

    def _sweep_tmp(self) -> None:
        """Remove crashed writes (stale) and unfinished removals; live writes are recent."""
        now = time.time()
        for child in self.tmp_dir.glob("*"):
            try:
                stale = now - child.stat().st_mtime > _STALE_TMP_SECONDS
            except OSError:
                continue
            if stale or child.name.startswith("removing-"):
                shutil.rmtree(child, ignore_errors=True)


def _machine_error(root: Path, e: OSError) -> StoreError:
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(root) else ""
    return StoreError(f"cannot write to the model cache at {root}: {e.strerror or e}{where}",
                      tip=_MACHINE_TIP)  # fmt: skip


def _folder_size(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
