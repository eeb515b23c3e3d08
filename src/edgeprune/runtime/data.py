"""Labelled test images without torch: an ImageFolder tree's test/ split, decoded like training.

On an edge device with the runtime extra alone, `bench --data TREE` measures accuracy from
TREE/test/<class>/<image> (or TREE/<class>/<image> when TREE is itself the test folder). The
other `--data` forms (digits, CIFAR pickles, one class tree split with a seed) need the full
install, whose `edgeprune.data` reproduces the training split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.preprocess import decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class LabelledImages:
    name: str
    images: np.ndarray  # uint8 (N, 3, S, S)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def load_test_images(
    spec: str | Path, *, class_names: list[str], image_size: int, max_per_class: int | None = None
) -> LabelledImages:
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise EdgepruneError(
            f"--data {spec}: without torch only an image tree can be read (TREE/test/<class>/<image> "
            "or TREE/<class>/<image>); digits and CIFAR pickles need the full edgeprune install"
        )
    folder = root / "test" if (root / "test").is_dir() else root
    found = _subfolders(folder)
    if found != list(class_names):
        raise EdgepruneError(
            f"the class folders of {folder} ({', '.join(found[:12])}) differ from the model's "
            f"classes ({', '.join(class_names[:12])}), or their order"
        )
    paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(class_names):
        files = sorted(
            str(p) for p in (folder / name).rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if max_per_class is not None:
            files = files[:max_per_class]
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise EdgepruneError(f"no images under {folder}")
    images = np.stack([decode_image(p, image_size) for p in paths])
    return LabelledImages(f"image tree {folder}", images, np.asarray(labels, dtype=np.int64), list(class_names))
