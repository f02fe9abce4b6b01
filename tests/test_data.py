import shutil

import numpy as np
import pytest

from quantbench.ml import data, preprocess
from quantbench.core.config import DataConfig
from quantbench.core.errors import DataError
from tests.conftest import make_image_folder


def _load(folder, **kw):
    return data.load_dataset(DataConfig(dir=folder, image_size=16, **kw))


def test_split_is_stratified_and_deterministic(image_folder):
    a = _load(image_folder, validation_split=0.25)
    b = _load(image_folder, validation_split=0.25)
    assert a.classes == ["cats", "dogs", "owls"]
    assert np.bincount(a.val_labels).tolist() == [3, 3, 3]
    assert a.val_paths == b.val_paths
    assert a.train_images.shape == (27, 16, 16, 3) and a.train_images.dtype == np.uint8
    other = _load(image_folder, validation_split=0.25, split_seed=7)
    assert other.val_paths != a.val_paths
    assert a.summary.train_count + a.summary.val_count == 36


def test_corrupt_and_non_image_files_are_skipped_and_counted(image_folder):
    (image_folder / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (image_folder / "dogs" / "readme.txt").write_text("hello")
    ds = _load(image_folder)
    assert sorted(s.path for s in ds.summary.skipped) == ["cats/broken.jpg", "dogs/readme.txt"]
    assert ds.summary.class_counts == {"cats": 12, "dogs": 12, "owls": 12}


def test_duplicates_stay_in_one_split(image_folder):
    # The same photo under two labels, as tf_flowers has it.
    shutil.copy(image_folder / "cats" / "cats_000.jpg", image_folder / "dogs" / "copy.jpg")
    for seed in range(6):
        ds = _load(image_folder, split_seed=seed)
        in_val = {p.rsplit("/", 1)[-1] for p in ds.val_paths}
        assert ("cats_000.jpg" in in_val) == ("copy.jpg" in in_val)
        assert ds.summary.duplicate_groups == 1


def test_max_images_per_class(image_folder):
    ds = _load(image_folder, max_images_per_class=5)
    assert sum(ds.summary.class_counts.values()) == 15


@pytest.mark.parametrize("layout", ["missing", "one_class", "empty_class"])
def test_bad_folders_are_clear_errors(tmp_path, layout):
    folder = tmp_path / "photos"
    if layout == "one_class":
        make_image_folder(folder, classes=("only",))
    elif layout == "empty_class":
        make_image_folder(folder)
        (folder / "empty").mkdir()
    with pytest.raises(DataError) as info:
        _load(folder)
    expected = {"missing": "data folder not found", "one_class": "at least 2 class sub-folders",
                "empty_class": "fewer than 2 readable images: empty"}[layout]  # fmt: skip
    assert expected in info.value.message


def test_offline_download_names_both_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "FLOWERS_URL", "http://127.0.0.1:9/flower_photos.tgz")
    with pytest.raises(DataError) as info:
        data.resolve_data_dir(None)
    assert "cannot download flower_photos.tgz" in info.value.message
    assert "--data DIR" in info.value.tip and "KERAS_HOME" in info.value.tip


def test_extraction_refuses_path_traversal(tmp_path, monkeypatch):
    import hashlib
    import io
    import tarfile

    archive = tmp_path / "datasets" / "flower_photos.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"evil"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    monkeypatch.setattr(data, "FLOWERS_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    with pytest.raises(tarfile.TarError):
        data.download_flowers(archive.parent)
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.realdata
def test_real_flowers_load_and_split(flowers_dir):
    ds = data.load_dataset(DataConfig(dir=flowers_dir, image_size=32))
    assert ds.summary.class_counts == {
        "daisy": 633, "dandelion": 898, "roses": 641, "sunflowers": 699, "tulips": 799
    }  # fmt: skip
    assert ds.summary.skipped == [] and ds.summary.duplicate_groups == 3
    assert abs(ds.summary.val_count / 3670 - 0.15) < 0.005
    # the roses/tulips photo is in one split only
    name = "15922772266_1167a06620.jpg"
    assert sum(p.endswith(name) for p in ds.val_paths) in (0, 2)


def test_search_holdout_leaves_training_and_keeps_duplicates_together(image_folder):
    # Two byte-identical training photos: both held out or both trained on, never split.
    shutil.copy(image_folder / "cats" / "cats_000.jpg", image_folder / "dogs" / "copy.jpg")
    full = _load(image_folder)
    held = data.hold_out_search(full, 5, seed=3)
    n = len(full.train_images)
    assert len(held.search_images) >= 5 and len(held.train_images) + len(held.search_images) == n
    assert held.summary.train_count == len(held.train_images)
    assert held.summary.search_count == len(held.search_images)
    assert (held.val_images == full.val_images).all()  # the scored photos are untouched
    # Disjoint: every training photo lands on exactly one side.
    trained = {a.tobytes() for a in held.train_images}
    searched = {a.tobytes() for a in held.search_images}
    assert not trained & searched
    assert trained | searched == {a.tobytes() for a in full.train_images}
    assert sorted(held.search_labels.tolist() + held.train_labels.tolist()) == sorted(full.train_labels.tolist())
    # Seeded, and never more than a quarter of the training photos.
    again = data.hold_out_search(full, 5, seed=3)
    assert (again.search_images == held.search_images).all()
    assert len(data.hold_out_search(full, 10_000, seed=3).search_images) <= n // 4 + 1


def test_photos_decoded_once_per_process_and_again_when_edited(image_folder, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(preprocess, "DECODED", preprocess.DecodedPhotos(1 << 26))
    calls = []
    real = preprocess.load_image
    monkeypatch.setattr(preprocess, "load_image", lambda path, size: calls.append(path) or real(path, size))
    first = _load(image_folder)
    assert len(calls) == 36
    second = _load(image_folder)
    assert len(calls) == 36  # the second read of the folder decoded nothing
    assert (first.train_images == second.train_images).all() and (first.val_images == second.val_images).all()
    second.train_images[0] += 1  # the dataset's arrays are its own, not the cached photos
    assert (_load(image_folder).train_images == first.train_images).all()
    # An edited photo (new bytes, new sha1) is decoded again; the others are not.
    Image.new("RGB", (40, 40), (0, 255, 0)).save(image_folder / "cats" / "cats_000.jpg")
    third = _load(image_folder)
    assert len(calls) == 37
    green = [img for img in np.concatenate([third.train_images, third.val_images])
             if img[..., 1].min() > 240 and img[..., [0, 2]].max() < 15]  # fmt: skip
    assert len(green) == 1  # the edited photo, as it is now
    # Bounded: a cache too small for one photo keeps nothing.
    tiny = preprocess.DecodedPhotos(10)
    tiny.put("x", 16, np.zeros((16, 16, 3), np.uint8))
    assert tiny.get("x", 16) is None
