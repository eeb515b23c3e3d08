"""Recognise what `--data` points at and list or load its raw contents (no decoding of files here)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS

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
    notes: list[str] = field(default_factory=list)  # links skipped while listing (also warned)


MAX_NAMED_LINKS = 10


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


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _class_links(folder: Path, class_names: list[str]) -> None:
    """A class folder may be a link (a tree of links into a data store), but not one that overlaps
    another class folder of the same tree: its images would carry two labels."""
    real = {name: os.path.realpath(folder / name) for name in class_names}
    for name in class_names:
        if not os.path.islink(folder / name):
            continue
        for other in class_names:
            if other != name and (_within(real[name], real[other]) or _within(real[other], real[name])):
                raise EdgepruneError(
                    f"class folder {folder / name} is a link to {real[name]}, which overlaps class "
                    f"folder {folder / other}: its images would be listed under two classes. "
                    "Remove the link, or make it a folder of its own"
                )


def _list_files(folder: Path, class_names: list[str]) -> tuple[list[tuple[str, int]], dict[str, list[str]]]:
    """(path, class index) of every image file under folder/<class>/, links not followed.

    torchvision's make_dataset follows directory links: a link to a parent loops forever and a
    link to another class folder lists its images again under the wrong label. Here a directory
    link is never entered, and a file link is kept only when it points outside every class folder
    of this tree (a tree of links into a data store) and at a file not already listed; every
    skipped link is returned by reason, to be named to the user.

    Order: the one make_dataset gives (class, then folder path, then file name, all sorted), so
    cache keys, fingerprints and splits of trees without links do not change."""
    root = os.path.expanduser(str(folder))
    class_real = [os.path.realpath(os.path.join(root, name)) for name in class_names]
    skipped: dict[str, list[str]] = {"dir": [], "other-class": [], "same-class": [], "repeat": []}
    samples: list[tuple[str, int]] = []
    seen_targets: dict[str, str] = {}  # real path of a kept file link -> the link kept
    for index, name in enumerate(class_names):
        found: list[tuple[str, str]] = []
        pending = [os.path.join(root, name)]  # the class folder itself may be a link (checked above)
        while pending:
            current = pending.pop()
            try:
                entries = list(os.scandir(current))
            except OSError as exc:
                raise EdgepruneError(f"cannot read folder {current}: {exc.strerror or exc}") from None
            for entry in entries:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    shown = f"{os.path.relpath(entry.path, root)} -> {target}"
                    if os.path.isdir(target):
                        skipped["dir"].append(shown)
                    elif not _is_image_file(entry.name):
                        continue
                    elif not os.path.exists(target):
                        found.append((current, entry.name))  # broken: decoding names it unreadable
                    elif not os.path.isfile(target):
                        continue  # a link to a FIFO or device is not an image
                    elif any(_within(target, real) for real in class_real):
                        owner = next(i for i, real in enumerate(class_real) if _within(target, real))
                        skipped["same-class" if owner == index else "other-class"].append(shown)
                    elif target in seen_targets:
                        skipped["repeat"].append(f"{shown} (already listed as {seen_targets[target]})")
                    else:
                        seen_targets[target] = os.path.relpath(entry.path, root)
                        found.append((current, entry.name))
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and _is_image_file(entry.name):
                    found.append((current, entry.name))
        samples += [(os.path.join(directory, file), index) for directory, file in sorted(found)]
    return samples, skipped


def _skipped_notes(folder: Path, skipped: dict[str, list[str]]) -> list[str]:
    reasons = {
        "dir": "directory link(s) not followed (a link can loop, or list images twice or under "
        "another class); to use their images, copy or link the image files themselves",
        "other-class": "file link(s) to an image in another class folder, skipped (it would be "
        "labelled twice)",
        "same-class": "file link(s) to an image in its own class folder, skipped (listed once, "
        "as the file itself)",
        "repeat": "file link(s) to a file another link already lists, skipped",
    }
    notes = []
    for kind, links in skipped.items():
        links = sorted(links)  # stable messages, whatever order the folders were walked in
        if links:
            named = "; ".join(links[:MAX_NAMED_LINKS])
            more = f"; and {len(links) - MAX_NAMED_LINKS} more" if len(links) > MAX_NAMED_LINKS else ""
            notes.append(f"{folder}: {len(links)} {reasons[kind]}: {named}{more}")
    return notes


def list_class_tree(folder: Path, *, classes: list[str] | None = None) -> ClassTree:
    """Image files under folder/<class>/ (recursively, sorted: deterministic order).

    `classes` forces the class list (test/ must match train/); every class must hold images.
    Links that are skipped (see _list_files) are named in `notes` (they reach the bundle's notes)."""
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
    _class_links(folder, class_names)
    samples, skipped = _list_files(folder, class_names)
    notes = _skipped_notes(folder, skipped)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        folders = ", ".join(str(folder / name) for name in empty)
        raise EdgepruneError(
            f"empty class folder(s): {folders} (no files ending in {', '.join(IMG_EXTENSIONS)}); "
            "remove the folder or add images"
        )
    return ClassTree(class_names, [p for p, _ in samples], labels, notes)


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


def list_extra_tree(folder: Path, class_names: list[str]) -> ClassTree:
    """Image files under folder/<class>/ for extra training images: labels index the base data's
    `class_names`. Unlike a data set's own tree, a class may be absent or empty (the fleet has
    labelled no part of it yet); a class the base data lacks is refused, since the model could
    not learn it and the test split could not judge it."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EdgepruneError(f"extra_train {folder}: no such folder (a class-folder tree <class>/<image>)")
    found = visible_subfolders(folder)
    unknown = [name for name in found if name not in class_names]
    if unknown:
        raise EdgepruneError(
            f"extra_train {folder} has class folder(s) the data lacks: {', '.join(unknown)} "
            f"(the data's classes: {', '.join(class_names)})"
        )
    _class_links(folder, found)
    samples, skipped = _list_files(folder, found)
    index = {name: class_names.index(name) for name in found}
    labels = np.array([index[found[label]] for _, label in samples], dtype=np.int64)
    return ClassTree(list(class_names), [path for path, _ in samples], labels, _skipped_notes(folder, skipped))
