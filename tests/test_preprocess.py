import numpy as np
import pytest

from quantbench.ml.preprocess import Preprocessing, UnreadableImage, load_image


def test_scalings_map_pixel_extremes():
    pixels = np.array([[[[0, 0, 0], [255, 255, 255]]]], dtype=np.uint8)
    assert Preprocessing(2, "-1..1").scale(pixels).min() == -1.0
    assert Preprocessing(2, "-1..1").scale(pixels).max() == 1.0
    assert Preprocessing(2, "0..1").scale(pixels).max() == 1.0
    assert Preprocessing(2, "0..255").scale(pixels).max() == 255.0
    imagenet = Preprocessing(2, "imagenet").scale(pixels)
    assert imagenet[0, 0, 0, 0] == pytest.approx(-123.675 / 58.395)


def test_bgr_reverses_channels():
    pixels = np.array([[[10, 20, 30]]], dtype=np.uint8)
    assert Preprocessing(1, "0..255", "bgr").scale(pixels).tolist() == [[[30.0, 20.0, 10.0]]]


def test_load_image_resizes_and_rejects_non_images(tmp_path):
    from PIL import Image

    Image.new("RGB", (50, 30), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("L", (20, 20), 128).save(tmp_path / "g.jpg")
    assert load_image(tmp_path / "a.png", 16).shape == (16, 16, 3)
    assert load_image(tmp_path / "g.jpg", 16).shape == (16, 16, 3)  # grayscale becomes RGB
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UnreadableImage):
        load_image(tmp_path / "notes.txt", 16)
    truncated = (tmp_path / "a.png").read_bytes()[:60]
    (tmp_path / "t.png").write_bytes(truncated)
    with pytest.raises(UnreadableImage):
        load_image(tmp_path / "t.png", 16)
