"""The one preprocessing function, shared by training, calibration and evaluation.

Images are decoded and resized once to uint8 arrays (`load_image`), then scaled to the
model's input range per batch (`Preprocessing.scale`), so every consumer sees identical
pixels and the uint8 cache stays four times smaller than float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# ImageNet channel statistics in 0..255 RGB, for `scaling="imagenet"`.
IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
SCALINGS = ("-1..1", "0..1", "0..255", "imagenet")
CHANNEL_ORDERS = ("rgb", "bgr")


class UnreadableImage(ValueError):
    """A file that is not an image PIL can decode (corrupt, truncated, or another format)."""


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode any image file to RGB and resize to size x size (bilinear): uint8 HxWx3."""
    try:
        with Image.open(path) as img:
            # JPEG draft mode decodes at a reduced scale directly: several times faster,
            # and still at least `size` pixels on each side before the final resize.
            img.draft("RGB", (size, size))
            img = img.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(f"{type(e).__name__}: {e}") from e


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    scaling: str = "-1..1"
    channel_order: str = "rgb"

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}")

    def scale(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB images (N,H,W,3) or (H,W,3) -> float32 model input."""
        x = np.asarray(images, dtype=np.float32)
        if self.scaling == "imagenet":
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
        elif self.scaling == "-1..1":
            x = x / 127.5 - 1.0
        elif self.scaling == "0..1":
            x = x / 255.0
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        return np.ascontiguousarray(x, dtype=np.float32)
