"""Image -> model input with PIL and numpy only.

The decoding mirrors `edgeprune.data.decode` exactly (JPEG draft, convert to RGB, bilinear resize
to a square, aspect ratio not kept), so an image classified on the device gets the same pixels the
model was trained and verified on. It is repeated here because importing `edgeprune.data` pulls
in torch, which the runtime must not need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image

from edgeprune.errors import EdgepruneError

ImageLike = Union[str, Path, Image.Image, np.ndarray]


def _to_rgb_resized(image: Image.Image, size: int) -> np.ndarray:
    image.draft(None, (size, size))  # JPEG: decode at a reduced scale (still >= size); no-op otherwise
    rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1)


def decode_image(item: ImageLike, size: int) -> np.ndarray:
    """One image (file path, PIL image, or uint8 HWC / CHW array) as uint8 (3, size, size)."""
    if isinstance(item, (str, Path)):
        try:
            with Image.open(item) as image:
                return _to_rgb_resized(image, size)
        except FileNotFoundError:
            raise EdgepruneError(f"image not found: {item}") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, ...
            raise EdgepruneError(f"{item} is not a readable image: {exc}") from None
    if isinstance(item, Image.Image):
        return _to_rgb_resized(item.copy(), size)
    if isinstance(item, np.ndarray):
        array = item
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
            array = array.transpose(1, 2, 0)  # CHW -> HWC
        if array.dtype != np.uint8:
            raise EdgepruneError(f"image arrays must be uint8 (0..255), got {array.dtype}")
        return _to_rgb_resized(Image.fromarray(np.ascontiguousarray(array)), size)
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
