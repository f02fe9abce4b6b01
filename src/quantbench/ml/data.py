"""Image-folder datasets: find the folder, read every image once, split it deterministically.

Where the photos come from, in order: `data.dir`; the extracted `flower_photos` in the Keras
cache (`$KERAS_HOME/datasets/flower_photos`, default `~/.keras`); else flower_photos.tgz is
downloaded into that cache and extracted. Unreadable files are skipped and counted, never fatal.
Byte-identical photos (tf_flowers has a few, one of them under two labels) are kept in the same
split so that validation never scores a photo the model was trained on.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from quantbench.core.config import DataConfig
from quantbench.core.errors import DataError, displayable
from quantbench.ml.preprocess import read_photo
from quantbench.core.results import DataSummary, SkippedFile

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
FLOWERS_SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"


def keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


@dataclass
class Dataset:
    classes: list[str]
    train_images: np.ndarray  # uint8 (N, H, W, 3), RGB, resized
    train_labels: np.ndarray  # int32 (N,)
    val_images: np.ndarray
    val_labels: np.ndarray
    val_paths: list[str]
    summary: DataSummary
    # sha1 of each photo's bytes, in array order (empty when unknown): what identifies the
    # scored photos across runs (DataSummary.eval_digest).
    train_digests: list[str] = field(default_factory=list)
    val_digests: list[str] = field(default_factory=list)
    # Training-split photos held out of training for a search (hold_out_search), or None.
    search_images: np.ndarray | None = None
    search_labels: np.ndarray | None = None


def resolve_data_dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DataError(
                f"data folder not found: {displayable(data_dir)}",
                tip="pass --data DIR with one sub-folder of images per class",
            )
        return data_dir
    cached = keras_home() / "datasets" / "flower_photos"
    if cached.is_dir():
        return cached
    return download_flowers(keras_home() / "datasets")


def download_flowers(datasets_dir: Path, emit=lambda level, text: None) -> Path:
    """Download and safely extract flower_photos.tgz into the Keras cache."""
    archive = datasets_dir / "flower_photos.tgz"
    offline_tip = (
        f"pass --data DIR (one sub-folder per class), or put the extracted flower_photos in "
        f"{datasets_dir} (set KERAS_HOME to use another Keras cache)"
    )
    try:
        datasets_dir.mkdir(parents=True, exist_ok=True)
        if not archive.is_file():
            emit("step", f"downloading tf_flowers into {datasets_dir} (228 MB)")
            partial = archive.with_suffix(".tgz.part")
            with urllib.request.urlopen(FLOWERS_URL, timeout=30) as response, open(partial, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
            os.replace(partial, archive)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"cannot download flower_photos.tgz: {reason}", tip=offline_tip) from e
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != FLOWERS_SHA256:
        archive.unlink()
        raise DataError("flower_photos.tgz is corrupt (checksum mismatch); deleted it", tip="retry")
    with tarfile.open(archive) as tar:
        tar.extractall(datasets_dir, filter="data")  # "data" refuses path traversal and links
    return datasets_dir / "flower_photos"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _link_target(link: Path, root: Path) -> tuple[Path | None, str | None]:
    """Where a symbolic link leads, or why it is not followed.

    Links that lead outside the data folder are followed (a class assembled from links into a
    photo library). Links back into it are not: they would count its photos twice, and a link
    to the folder itself or an ancestor (`DIR/loop -> DIR`) would make a class of every photo
    again, or a loop."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        return None, "broken symbolic link"
    if _inside(target, root) or _inside(root, target):
        where = "the data folder" if target == root else displayable(target)
        return None, f"symbolic link back into the data folder ({where}): not followed"
    return target, None


def _skip(path: Path, root: Path, reason: str) -> SkippedFile:
    return SkippedFile(path=displayable(path.relative_to(root)), reason=reason)


def class_folders(root: Path) -> tuple[list[Path], list[SkippedFile]]:
    """The class sub-folders of `root` (sorted, hidden ones ignored), and what was passed over."""
    real_root = root.resolve()
    folders: list[Path] = []
    skipped: list[SkippedFile] = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_symlink():
            _, why = _link_target(p, real_root)
            if why:
                skipped.append(_skip(p, root, why))
                continue
        if p.is_dir():
            folders.append(p)
    return folders, skipped


def list_images(folder: Path, root: Path) -> tuple[list[Path], list[SkippedFile]]:
    """Every file under `folder` (sorted, recursively), and what was passed over.

    Hidden files and folders are ignored (`.ipynb_checkpoints/` holds copies of the class's
    own photos, `.DS_Store` is no photo); symbolic links are followed as `_link_target` says."""
    real_root = root.resolve()
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    seen: set[Path] = {folder.resolve()}

    def walk(directory: Path) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError as e:
            skipped.append(_skip(directory, root, f"unreadable folder: {e.strerror or e}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target, why = _link_target(path, real_root)
                if why:
                    skipped.append(_skip(path, root, why))
                elif target.is_dir() and target not in seen:  # a loop outside is walked once
                    seen.add(target)
                    walk(path)
                elif target.is_file():
                    files.append(path)
            elif entry.is_dir(follow_symlinks=False):
                walk(path)
            elif entry.is_file(follow_symlinks=False):
                files.append(path)

    walk(folder)
    return sorted(files), sorted(skipped, key=lambda s: s.path)


def check_class_folders(root: Path) -> list[Path]:
    folders, _ = class_folders(root)
    if len(folders) < 2:
        found = ", ".join(displayable(p.name) for p in folders) or "none"
        raise DataError(
            f"{displayable(root)} needs at least 2 class sub-folders, found {len(folders)} ({found})",
            tip="arrange images as DIR/<class name>/<image files>",
        )
    return folders


def _split(groups: list[tuple[str, int]], fraction: float, seed: int) -> np.ndarray:
    """Stratified split over (sha1, label) items: True for validation.

    Per class, a seeded shuffle puts round(n * fraction) items (at least one) in validation;
    then every copy of a duplicated photo follows its first copy.
    """
    rng = np.random.default_rng(seed)
    labels = np.array([label for _, label in groups])
    is_val = np.zeros(len(groups), dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n_val = min(len(idx) - 1, max(1, round(len(idx) * fraction)))
        is_val[rng.permutation(idx)[:n_val]] = True
    first_split: dict[str, bool] = {}
    for i, (digest, _) in enumerate(groups):
        is_val[i] = first_split.setdefault(digest, bool(is_val[i]))
    return is_val


def load_dataset(cfg: DataConfig, emit=lambda level, text: None, readers: int = 4) -> Dataset:
    """Read, resize and split every image of the data folder (`readers` threads: decoding
    releases the GIL); skipped files are reported through `emit("warn", ...)` and counted in
    the summary."""
    root = resolve_data_dir(cfg.dir)
    folders = check_class_folders(root)
    _, passed_over = class_folders(root)
    classes = [displayable(f.name) for f in folders]  # results.json and terminals need text
    files: list[tuple[Path, int]] = []
    rng = np.random.default_rng(cfg.split_seed)
    for label, folder in enumerate(folders):
        paths, skipped_here = list_images(folder, root)
        passed_over += skipped_here
        if cfg.max_images_per_class and len(paths) > cfg.max_images_per_class:
            paths = sorted(rng.permutation(paths)[: cfg.max_images_per_class].tolist())
        files += [(p, label) for p in paths]

    size = cfg.image_size
    pool = ThreadPoolExecutor(max_workers=max(1, readers))
    try:
        reads = list(pool.map(lambda f: read_photo(f[0], size), files))
    finally:
        # Interrupted (Ctrl-C, SIGTERM): drop the images not read yet instead of reading them all.
        pool.shutdown(wait=True, cancel_futures=True)

    skipped = passed_over + [_skip(p, root, why)
                             for (p, _), (_, _, why) in zip(files, reads) if why]  # fmt: skip
    keep = [i for i, (_, _, why) in enumerate(reads) if not why]
    for s in skipped:
        emit("warn", f"skipped {s.path}: {s.reason}")
    labels = np.array([files[i][1] for i in keep], dtype=np.int32)
    counts = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
    empty = [c for c, n in counts.items() if n < 2]
    if empty:
        raise DataError(
            f"class folder(s) with fewer than 2 readable images: {', '.join(empty)} "
            f"(in {displayable(root)})",
            tip="add images to those folders or remove them",
        )
    digests = [reads[i][1] for i in keep]
    is_val = _split(list(zip(digests, labels.tolist())), cfg.validation_split, cfg.split_seed)
    images = np.stack([reads[i][0] for i in keep])
    duplicate_groups = len(digests) - len(set(digests))
    summary = DataSummary(
        source=displayable(root),
        classes=classes,
        class_counts=counts,
        train_count=int((~is_val).sum()),
        val_count=int(is_val.sum()),
        split_seed=cfg.split_seed,
        validation_split=cfg.validation_split,
        image_size=size,
        skipped=skipped,
        duplicate_groups=duplicate_groups,
    )
    dataset = Dataset(
        classes=classes,
        train_images=images[~is_val],
        train_labels=labels[~is_val],
        val_images=images[is_val],
        val_labels=labels[is_val],
        val_paths=[str(files[i][0]) for i, v in zip(keep, is_val) if v],
        summary=summary,
        train_digests=[d for d, v in zip(digests, is_val) if not v],
        val_digests=[d for d, v in zip(digests, is_val) if v],
    )
    return describe_evaluation(dataset, f"validation split ({cfg.validation_split:g})")


def describe_evaluation(dataset: Dataset, how: str) -> Dataset:
    """Record in the summary which photos are scored (their labels, a digest) and how."""
    from quantbench.core.results import encode_classes

    digest = None
    if dataset.val_digests and len(dataset.val_digests) == len(dataset.val_labels):
        digest = hashlib.sha1("\n".join(dataset.val_digests).encode()).hexdigest()
    summary = dataset.summary.model_copy(update={
        "eval_labels": encode_classes(dataset.val_labels), "eval_digest": digest,
        "eval_split": how, "val_count": len(dataset.val_labels),
    })  # fmt: skip
    return replace(dataset, summary=summary)


def calibration_split(dataset: Dataset, count: int, seed: int) -> Dataset:
    """For an already-trained model: a fixed, seeded slice of every photo for calibration
    (`count`, but never more than a third), and every other photo scored.

    The representative dataset needs no labels and a few hundred images at most (the
    converter only reads activation ranges from it), so holding out 85% of a user's photos
    for it wastes them: at 300 photos, a 15% validation split scores 45 (one photo = 2.2
    points, +/-11 points of sampling error); this scores 200.
    """
    images = np.concatenate([dataset.train_images, dataset.val_images])
    labels = np.concatenate([dataset.train_labels, dataset.val_labels])
    digests = dataset.train_digests + dataset.val_digests
    n = len(images)
    take = max(1, min(count, n // 3))
    picks = np.zeros(n, dtype=bool)
    picks[np.random.default_rng(seed).permutation(n)[:take]] = True
    summary = dataset.summary.model_copy(update={
        "train_count": take, "calibration_count": take,
    })  # fmt: skip
    split = replace(
        dataset, train_images=images[picks], train_labels=labels[picks],
        val_images=images[~picks], val_labels=labels[~picks], val_paths=[], summary=summary,
        train_digests=[d for d, p in zip(digests, picks) if p] if len(digests) == n else [],
        val_digests=[d for d, p in zip(digests, picks) if not p] if len(digests) == n else [],
    )  # fmt: skip
    return describe_evaluation(
        split, f"every photo except {take} seeded calibration photos (seed {seed})"
    )


def hold_out_search(dataset: Dataset, count: int, seed: int) -> Dataset:
    """Move a seeded slice of the training photos (`count`, at most a quarter of them) out of
    training, into `search_images`: photos the model is neither trained on nor scored on.

    Why not score a search on training photos the model learnt: there the quantization loss
    looks larger than it is. On the default preset, per-channel int8 lost 1.3 points on 1000
    training photos but 0.9 on the validation split, and per-tensor int8 with 3 float layers
    lost 1.8 against a gain of 0.9; a 1-point budget then kept 27 layers in float where 3
    sufficed. Byte-identical photos stay on one side (as for the validation split)."""
    n = len(dataset.train_images)
    take = min(count, n // 4)
    if take <= 0:
        return dataset
    digests = dataset.train_digests if len(dataset.train_digests) == n else [str(i) for i in range(n)]
    groups: dict[str, list[int]] = {}
    for i, digest in enumerate(digests):
        groups.setdefault(digest, []).append(i)
    order = list(groups.values())
    held, moved = np.zeros(n, dtype=bool), 0
    for g in np.random.default_rng([seed, 7]).permutation(len(order)):
        if moved >= take:
            break
        held[order[g]] = True
        moved += len(order[g])
    summary = dataset.summary.model_copy(update={
        "train_count": int((~held).sum()), "search_count": int(held.sum()),
    })  # fmt: skip
    return replace(
        dataset, train_images=dataset.train_images[~held], train_labels=dataset.train_labels[~held],
        train_digests=[d for d, h in zip(dataset.train_digests, held) if not h]
        if len(dataset.train_digests) == n else [],
        search_images=dataset.train_images[held], search_labels=dataset.train_labels[held],
        summary=summary,
    )  # fmt: skip


def calibration_indices(n_train: int, count: int, seed: int) -> np.ndarray:
    """Which training images form the representative dataset: fixed by seed, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_train)[: min(count, n_train)])
