"""Recognise what `--data` points at and list or load its raw contents (no decoding of files here)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from edgeprune.errors import EdgepruneError

CIFAR_FOLDER = "cifar-10-batches-py"

ACCEPTED_FORMS = (
    "`digits` (scikit-learn's bundled handwritten digits, offline)",
    f"a torchvision CIFAR-10 root: a folder containing {CIFAR_FOLDER}/, or that folder itself "
    "(add --download to fetch it)",
    "an ImageFolder tree: train/<class>/<image> and test/<class>/<image>",
    "a single class-folder tree: <class>/<image> (split stratified into train/test with the seed)",
)


def accepted_forms() -> str:
    return "accepted --data forms: " + "; ".join(ACCEPTED_FORMS)


@dataclass
class DetectedSource:
    kind: str  # "digits" | "cifar10" | "imagefolder" | "single-tree"
    path: Path | None  # the tree root; for cifar10 the torchvision root (parent of cifar-10-batches-py)
    ignored_folders: list[str]  # e.g. a val/ next to train/ and test/, which the hold-out replaces


@dataclass
class ClassTree:
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray  # int64, index into class_names


def visible_subfolders(folder: Path) -> list[str]:
    # Hand-filtered rather than torchvision's find_classes, which counts hidden folders
    # such as .ipynb_checkpoints as classes.
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def detect_source(spec: str, *, download: bool) -> DetectedSource:
    if spec == "digits":
        return DetectedSource("digits", None, [])
    path = Path(spec).expanduser()
    if not path.exists():
        if download:
            return DetectedSource("cifar10", path, [])
        raise EdgepruneError(
            f"--data {spec}: no such file or folder. To fetch CIFAR-10 into it, add --download "
            f"(download=True). Otherwise {accepted_forms()}"
        )
    if not path.is_dir():
        raise EdgepruneError(f"--data {spec} is a file, not a folder; {accepted_forms()}")
    if path.name == CIFAR_FOLDER:
        return DetectedSource("cifar10", path.parent, [])
    if (path / CIFAR_FOLDER).is_dir():
        return DetectedSource("cifar10", path, [])
    subfolders = visible_subfolders(path)
    has_train, has_test = "train" in subfolders, "test" in subfolders
    if has_train and has_test:
        others = [name for name in subfolders if name not in ("train", "test")]
        return DetectedSource("imagefolder", path, others)
    if has_train or has_test:
        present, missing = ("train", "test") if has_train else ("test", "train")
        raise EdgepruneError(
            f"--data {spec} has {present}/ but no {missing}/: an ImageFolder tree needs both "
            f"train/ and test/; {accepted_forms()}"
        )
    if subfolders:
        return DetectedSource("single-tree", path, [])
    if download:
        return DetectedSource("cifar10", path, [])
    raise EdgepruneError(f"--data {spec} holds no class folders; {accepted_forms()}")


def _is_image_file(path: str) -> bool:
    name = os.path.basename(path)
    # Hidden files (e.g. macOS ._foo.jpg resource forks) are not images, whatever their extension.
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def list_class_tree(folder: Path, *, classes: list[str] | None = None) -> ClassTree:
    """Image files under folder/<class>/ (recursively, sorted: deterministic order).

    `classes` forces the class list (test/ must match train/); every class must hold images."""
    found = visible_subfolders(folder)
    if classes is not None and found != classes:
        only_train = sorted(set(classes) - set(found))
        only_here = sorted(set(found) - set(classes))
        problems = []
        if only_train:
            problems.append(f"missing from {folder}: {', '.join(only_train)}")
        if only_here:
            problems.append(f"in {folder} but not in the training folder: {', '.join(only_here)}")
        raise EdgepruneError(
            "train and test class folders differ (" + "; ".join(problems) + "): both splits "
            "need the same classes"
        )
    class_names = classes if classes is not None else found
    if len(class_names) < 2:
        only = f" ({class_names[0]})" if class_names else ""
        raise EdgepruneError(
            f"{folder} has {len(class_names)} class folder{only}: a classifier needs at least 2"
        )
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    samples = make_dataset(str(folder), class_to_idx, is_valid_file=_is_image_file, allow_empty=True)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        folders = ", ".join(str(folder / name) for name in empty)
        raise EdgepruneError(
            f"empty class folder(s): {folders} (no files ending in {', '.join(IMG_EXTENSIONS)}); "
            "remove the folder or add images"
        )
    return ClassTree(class_names, [p for p, _ in samples], labels)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's bundled 8x8 digits as uint8 (N, 3, 8, 8) scaled 0..16 -> 0..255, labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(grey[:, None, :, :], 3, axis=1)
    return images, digits.target.astype(np.int64), [str(d) for d in digits.target_names]


def load_cifar_arrays(root: Path, *, download: bool) -> tuple[dict, list[str]]:
    """CIFAR-10 pickled batches via torchvision: {"train"|"test": (uint8 (N, 3, 32, 32), labels)}."""
    from torchvision.datasets import CIFAR10

    arrays = {}
    try:
        for split in ("train", "test"):
            dataset = CIFAR10(str(root), train=split == "train", download=download)
            images = np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2))
            arrays[split] = (images, np.asarray(dataset.targets, dtype=np.int64))
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        hint = (
            "the download did not produce a valid copy"
            if download
            else "pass --download (download=True) to fetch it there"
        )
        raise EdgepruneError(
            f"CIFAR-10 not found or corrupted under {root / CIFAR_FOLDER}: {hint}"
        ) from exc
    except OSError as exc:  # includes urllib's URLError when the download fails
        action = "download" if download else "read"
        raise EdgepruneError(f"could not {action} CIFAR-10 under {root}: {exc}") from exc
    return arrays, list(dataset.classes)
