"""Exact-duplicate detection on decoded pixels: identical uint8 images after resizing to the
bundle's image_size. Copies under another name or in another lossless format are caught;
re-compressed (lossy) copies are not, as their pixels differ."""

from __future__ import annotations

import hashlib
from collections import Counter

import torch


def pixel_hashes(images: torch.Tensor) -> list[bytes]:
    array = images.numpy()
    return [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in array]


def duplicates_within(hashes: list[bytes]) -> int:
    """Images that repeat an earlier image of the same split."""
    return sum(count - 1 for count in Counter(hashes).values())


def found_in(reference: list[bytes], hashes: list[bytes]) -> list[int]:
    """Positions in `hashes` whose image also appears in `reference`."""
    seen = set(reference)
    return [i for i, h in enumerate(hashes) if h in seen]
