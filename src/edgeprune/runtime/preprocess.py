"""Image -> model input with PIL and numpy only.

`to_rgb_resized` is the one decoding rule (JPEG draft, 16-bit greyscale scaled to 8 bits,
convert to RGB, bilinear resize to a square, aspect ratio not kept). `edgeprune.data.decode` imports
it from here (data may import runtime, never the reverse: importing `edgeprune.data` pulls in
torch), so an image classified on the device gets the same pixels the model was trained and
verified on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image

from edgeprune.errors import EdgepruneError

ImageLike = Union[str, Path, Image.Image, np.ndarray]


# PIL modes of 16-bit greyscale samples (PNG, TIFF; byte order varies). PIL's own convert("RGB")
# clips them at 255, so a 16-bit camera image would decode to (almost) pure white.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_RULE = (
    "16-bit greyscale scaled to 8 bits as round(value * 255 / max), max = 65535 (2^16 - 1) or "
    "2^bits - 1 when the file declares fewer bits per sample (TIFF), then grey copied to R, G, B"
)
TIFF_BITS_PER_SAMPLE, TIFF_MAX_SAMPLE_VALUE = 258, 281


def is_sixteen_bit(mode: str) -> bool:
    return mode in SIXTEEN_BIT_MODES


def _declared_max(image: Image.Image) -> int:
    """The largest sample value the file declares (TIFF: MaxSampleValue or BitsPerSample; a
    12-bit TIFF opens as I;16 holding 0..4095); 65535 otherwise (PNG stores 16-bit full range)."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None:
        try:
            declared = tags.get(TIFF_MAX_SAMPLE_VALUE)
            if declared is not None:
                declared = int(declared[0] if isinstance(declared, tuple) else declared)
                if 0 < declared <= 65535:
                    return declared
            bits = tags.get(TIFF_BITS_PER_SAMPLE)
            bits = int(bits[0] if isinstance(bits, tuple) else bits) if bits is not None else 16
            if 1 <= bits < 16:
                return 2**bits - 1
        except (TypeError, ValueError, IndexError):  # a malformed tag: keep the full 16-bit range
            pass
    return 65535


def sixteen_bit_to_8bit(samples: np.ndarray, max_value: int = 65535) -> np.ndarray:
    """uint16 samples -> uint8 as round(value * 255 / max_value), values above max_value -> 255."""
    wide = np.minimum(samples.astype(np.uint32), max_value)
    return ((wide * 255 + max_value // 2) // max_value).astype(np.uint8)


def to_rgb_resized(image: Image.Image, size: int) -> np.ndarray:
    """A PIL image as uint8 (3, size, size): the decoding rule shared by training and runtime."""
    image.draft(None, (size, size))  # JPEG: decode at a reduced scale (still >= size); no-op otherwise
    if is_sixteen_bit(image.mode):
        grey = sixteen_bit_to_8bit(np.asarray(image), _declared_max(image))
        image = Image.fromarray(grey)  # uint8 2-D: mode L
    rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1)


def decode_image(item: ImageLike, size: int) -> np.ndarray:
    """One image (file path, PIL image, or uint8 / uint16 HW, HWC or CHW array) as uint8 (3, size, size)."""
    if isinstance(item, (str, Path)):
        try:
            with Image.open(item) as image:
                return to_rgb_resized(image, size)
        except FileNotFoundError:
            raise EdgepruneError(f"image not found: {item}") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, ...
            raise EdgepruneError(f"{item} is not a readable image: {exc}") from None
    if isinstance(item, Image.Image):
        if is_sixteen_bit(item.mode):  # scale before copy(), which drops a TIFF's declared depth
            return to_rgb_resized(Image.fromarray(sixteen_bit_to_8bit(np.asarray(item), _declared_max(item))), size)
        return to_rgb_resized(item.copy(), size)
    if isinstance(item, np.ndarray):
        array = item
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
            array = array.transpose(1, 2, 0)  # CHW -> HWC
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))):
            # PIL's own error here is "TypeError: Cannot handle this data type: (1, 1, 32), |u1"
            raise EdgepruneError(
                f"an image array must be (H, W), (H, W, C) or (3, H, W) with C = 1, 3 or 4, got shape "
                f"{tuple(item.shape)} (several images: pass a list, or a batch (N, H, W, 3) / (N, 3, H, W))")
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype == np.uint16:  # a 16-bit camera frame: the same rule as a 16-bit file
            array = sixteen_bit_to_8bit(array)
        if array.dtype != np.uint8:
            raise EdgepruneError(f"image arrays must be uint8 (0..255) or uint16, got {array.dtype}")
        return to_rgb_resized(Image.fromarray(np.ascontiguousarray(array)), size)
    raise EdgepruneError(f"cannot read an image from a {type(item).__name__}")


def decode_images(items: Iterable[ImageLike], size: int) -> np.ndarray:
    arrays = [decode_image(item, size) for item in items]
    if not arrays:
        return np.zeros((0, 3, size, size), dtype=np.uint8)
    return np.stack(arrays)


def normalize(
    images_uint8: np.ndarray, mean: Sequence[float], std: Sequence[float], scale: float = 1.0 / 255.0
) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 ((x * scale) - mean) / std, the model's input."""
    if images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
        raise EdgepruneError(f"expected images as (N, 3, H, W), got shape {images_uint8.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    x = images_uint8.astype(np.float32) * np.float32(scale)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)
