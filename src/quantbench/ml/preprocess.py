"""The one preprocessing function, shared by training, calibration and evaluation.

Images are decoded and resized once to uint8 arrays (`load_image`), then scaled to the
model's input range per batch (`Preprocessing.scale`), so every consumer sees identical
pixels and the uint8 cache stays four times smaller than float32.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
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


# 16-bit grayscale (PNG, TIFF, PGM): Pillow keeps the 16-bit values, and convert("RGB") clips
# them at 255, so a 16-bit photo became all white. Scaled by 255/65535 instead.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Float pixels carry no range of their own (0..1? 0..255? HDR radiance?): skipped, not guessed.
UNDEFINED_RANGE_MODES = frozenset({"F"})


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode any image file to sRGB and resize to size x size (bilinear): uint8 HxWx3.

    Every mode Pillow opens either becomes the right 8-bit RGB or raises UnreadableImage with
    the reason (the caller skips and counts the file): 1, L, P, RGB, YCbCr, CMYK, LAB and HSV
    convert directly; alpha (LA, PA, RGBA) is dropped as Keras' `load_img` and
    `tf.image.decode_png(channels=3)` drop it, so the model sees what such a pipeline trained
    it on; 16-bit grayscale is scaled to 8 bits, and so are 32-bit integer images whose values
    fit in 16 bits; float images are refused. An embedded ICC profile other than sRGB (Adobe
    RGB, ProPhoto: 260 of tf_flowers' 3,670 photos) is converted to sRGB, as a viewer shows the
    photo. Images over Pillow's decompression-bomb limit are refused before decoding.
    """
    try:
        with Image.open(path) as img:
            # JPEG draft mode decodes at a reduced scale directly: several times faster,
            # and still at least `size` pixels on each side before the final resize.
            img.draft("RGB", (size, size))
            icc = img.info.get("icc_profile")
            transform = _srgb_transform(bytes(icc), img.mode) if icc else None
            if transform is not None and img.mode == "CMYK":
                img, transform = _apply(img, transform), None  # CMYK needs its profile first
            rgb = _to_rgb(img).resize((size, size), Image.BILINEAR)
            if transform is not None:  # after the resize: 100x fewer pixels to transform
                rgb = _apply(rgb, transform)
            return np.asarray(rgb, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"larger than Pillow's decompression-bomb limit ({e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as e:
        raise UnreadableImage(f"{type(e).__name__}: {e}") from e


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise UnreadableImage("32-bit integer pixels beyond 16 bits: no defined 8-bit range")
        gray = (values.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in UNDEFINED_RANGE_MODES:
        raise UnreadableImage(f"{mode!r} (floating-point) pixels have no defined 8-bit range")
    if mode in ("La", "RGBa"):  # premultiplied alpha: Pillow converts these only via RGBA
        img = img.convert("RGBA")
    return img.convert("RGB")


@functools.lru_cache(maxsize=64)
def _srgb_transform(icc: bytes, mode: str):
    """The transform from an embedded RGB or CMYK profile to sRGB; None when the profile is
    sRGB already, of another colour space, or unusable.

    Profiles named sRGB (1,460 of tf_flowers' photos, most cameras') are left alone: a transform
    would cost time for at most 1-level rounding differences."""
    from PIL import ImageCms

    if mode not in ("RGB", "CMYK"):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return None
        return ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A damaged profile, or one for another colour space than the pixels': browsers
        # ignore those too and show the pixels as they are.
        return None


def _apply(img: Image.Image, transform) -> Image.Image:
    from PIL import ImageCms

    return ImageCms.applyTransform(img, transform)


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


class DecodedPhotos:
    """Decoded photos of this process, by the sha1 of their bytes and the image size: the
    trials of a sweep (and repeated API calls) that read the same folder decode each photo
    once. Content-addressed, so an edited photo is decoded again; bounded, oldest dropped."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: dict[tuple[str, int], np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, digest: str, size: int) -> np.ndarray | None:
        return self._items.get((digest, size))

    def put(self, digest: str, size: int, pixels: np.ndarray) -> None:
        with self._lock:
            if (digest, size) in self._items or pixels.nbytes > self.max_bytes:
                return
            while self._items and self._bytes + pixels.nbytes > self.max_bytes:
                self._bytes -= self._items.pop(next(iter(self._items))).nbytes
            pixels.setflags(write=False)  # shared: nobody may change a cached photo
            self._items[(digest, size)] = pixels
            self._bytes += pixels.nbytes


DECODED = DecodedPhotos(1 << 30)  # 1 GiB: tf_flowers at 224 px is 550 MB


def read_photo(path: Path, size: int) -> tuple[np.ndarray | None, str, str | None]:
    """(pixels or None, sha1 of the bytes, reason it was skipped)."""
    try:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError as e:
        return None, "", f"unreadable: {e.strerror or e}"
    cached = DECODED.get(digest, size)
    if cached is not None:
        return cached, digest, None
    try:
        pixels = load_image(path, size)
    except UnreadableImage as e:
        return None, digest, f"not a decodable image ({e})"
    DECODED.put(digest, size, pixels)
    return pixels, digest, None
