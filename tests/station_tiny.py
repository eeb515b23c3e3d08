"""A station on a hand-built two-class ONNX graph (classes c0, c1; 8x8 input) and a replay of
random PNGs: the real station, runtime and SQLite in a second, for tests about the station's
plumbing rather than its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from test_bad_input import tiny_onnx  # noqa: E402


def tiny_station_files(root: Path, per_class: int = 20, classes=("c0", "c1")) -> tuple[Path, Path]:
    """(model.onnx, replay folder) under root."""
    model = tiny_onnx(root / "tiny.onnx")
    rng = np.random.default_rng(0)
    for name in classes:
        folder = root / "replay" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return model, root / "replay"
