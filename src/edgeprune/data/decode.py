"""Decode image files once with PIL into a uint8 (N, 3, S, S) array, on a small thread pool."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgeprune.runtime.preprocess import to_rgb_resized

ProgressFn = Callable[[str, int, int], None]  # (description, done, total)

CHUNK = 512  # files per pool task: large enough to amortise scheduling, small for smooth progress


@dataclass
class DecodedFiles:
    images: np.ndarray  # uint8 (N, 3, S, S); zeros where the file was unreadable
    widths: np.ndarray  # int32 (N,), source width in pixels (0 if unreadable)
    heights: np.ndarray  # int32 (N,)
    modes: list[str]  # PIL mode of each source file ("" if unreadable)
    errors: dict[str, str]  # unreadable path -> reason

    @property
    def readable(self) -> np.ndarray:
        return self.widths > 0


def _decode_into(paths: list[str], start: int, out: DecodedFiles, size: int) -> None:
    for i, path in enumerate(paths, start):
        try:
            with Image.open(path) as image:
                out.widths[i], out.heights[i] = image.size
                out.modes[i] = image.mode
                # The runtime's rule (draft, 16-bit scaling, RGB, resize): the device must see
                # the pixels the model was trained on.
                out.images[i] = to_rgb_resized(image, size)
        except Exception as exc:  # PIL raises many types (OSError, ValueError, SyntaxError, ...)
            out.widths[i] = out.heights[i] = 0
            out.modes[i] = ""
            out.errors[path] = f"{type(exc).__name__}: {exc}"


def decode_files(
    paths: list[str],
    image_size: int,
    *,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    description: str = "decoding images",
) -> DecodedFiles:
    """Open, convert to RGB and resize (bilinear, aspect ratio not kept) every file.

    PIL releases the GIL while decoding, so threads overlap; unreadable files are recorded, not
    raised, so the caller can name all of them at once."""
    n = len(paths)
    out = DecodedFiles(
        images=np.zeros((n, 3, image_size, image_size), dtype=np.uint8),
        widths=np.zeros(n, dtype=np.int32),
        heights=np.zeros(n, dtype=np.int32),
        modes=[""] * n,
        errors={},
    )
    workers = workers or min(4, os.cpu_count() or 1)
    done = 0
    if progress:
        progress(description, 0, n)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(_decode_into, paths[start : start + CHUNK], start, out, image_size): min(CHUNK, n - start)
            for start in range(0, n, CHUNK)
        }
        for future in as_completed(futures):
            future.result()
            done += futures[future]
            if progress:
                progress(description, done, n)
    # Errors arrive in thread order; keep them in file order for stable messages.
    out.errors = {p: out.errors[p] for p in paths if p in out.errors}
    return out
