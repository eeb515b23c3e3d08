"""`load_data`: detect the source, decode once (through the disk cache), split, normalise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.data.bundle import CIFAR_MEAN, CIFAR_STD, DataBundle, Split
from edgeprune.data.cache import decode_cached
from edgeprune.data.decode import ProgressFn
from edgeprune.data.dedup import found_in, pixel_hashes
from edgeprune.data.sources import (
    ClassTree,
    detect_source,
    list_class_tree,
    load_cifar_arrays,
    load_digits_arrays,
)
from edgeprune.data.splits import first_n_per_class, stratified_holdout
from edgeprune.errors import EdgepruneError

NORMALIZATIONS = ("cifar", "dataset")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024
MAX_DECODED_BYTES = 32 * 2**30  # refuse requests whose decoded cache would not fit a normal machine
RESIZE_CHUNK = 2048  # images resized per float batch, to bound memory


@dataclass
class FileStats:
    """What the source files looked like before decoding (for `edgeprune data check`)."""

    count: int = 0
    widths: list[int] = field(default_factory=list)  # readable files only
    heights: list[int] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason


@dataclass
class LoadedData:
    bundle: DataBundle
    files: FileStats | None  # None for digits / CIFAR pickles


def _validate(image_size, val_fraction, test_fraction, normalization, max_per_class) -> None:
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise EdgepruneError(
            f"--image-size {image_size} is out of range: use {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} "
            "pixels (32 for CIFAR-sized inputs)"
        )
    if not 0 <= val_fraction < 1:
        raise EdgepruneError(f"--val-fraction must be in [0, 1) (0 = no validation split), got {val_fraction}")
    if not 0 < test_fraction < 1:
        raise EdgepruneError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if normalization not in NORMALIZATIONS:
        raise EdgepruneError(f"unknown normalization {normalization!r}: choose one of {', '.join(NORMALIZATIONS)}")
    if max_per_class is not None and max_per_class < 1:
        raise EdgepruneError(f"--max-per-class must be >= 1, got {max_per_class}")


def _resize_uint8(images: np.ndarray, size: int) -> torch.Tensor:
    tensor = torch.from_numpy(images)
    if tensor.shape[-2:] == (size, size):
        return tensor.contiguous()
    chunks = [
        F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in tensor.split(RESIZE_CHUNK)
    ]
    return torch.cat(chunks)


def _array_split(images: np.ndarray, labels: np.ndarray, size: int, max_per_class: int | None) -> Split:
    keep = first_n_per_class(labels, max_per_class)
    return Split(_resize_uint8(images[keep], size), torch.from_numpy(labels[keep]), None)


def _decode_tree(
    tree: ClassTree,
    what: str,
    *,
    image_size: int,
    max_per_class: int | None,
    skip_bad: bool,
    stats: FileStats,
    notes: list[str],
    log: Callable[[str], None],
    progress: ProgressFn | None,
) -> Split:
    keep = first_n_per_class(tree.labels, max_per_class)
    paths = [tree.paths[i] for i in keep]
    labels = tree.labels[keep]
    decoded = decode_cached(paths, image_size, log=log, progress=progress, description=f"decoding {what}")
    readable = decoded.readable
    stats.count += len(paths)
    stats.widths += decoded.widths[readable].tolist()
    stats.heights += decoded.heights[readable].tolist()
    stats.modes.update(mode for mode in decoded.modes if mode)
    stats.unreadable.update(decoded.errors)
    if decoded.errors:
        listed = "; ".join(f"{path} ({reason})" for path, reason in list(decoded.errors.items())[:5])
        more = f" and {len(decoded.errors) - 5} more" if len(decoded.errors) > 5 else ""
        if not skip_bad:
            raise EdgepruneError(
                f"{len(decoded.errors)} unreadable image file(s) in {what}: {listed}{more}. "
                "Fix or remove them, or pass --skip-bad (skip_bad=True) to leave them out"
            )
        log(f"skipping {len(decoded.errors)} unreadable image(s) in {what}: {listed}{more}")
        notes.append(f"skipped {len(decoded.errors)} unreadable image(s) in {what} (--skip-bad): {listed}{more}")
        counts = np.bincount(labels[readable], minlength=len(tree.class_names))
        emptied = [tree.class_names[i] for i in np.flatnonzero(counts == 0)]
        if emptied:
            raise EdgepruneError(f"no readable images left in {what} for class(es): {', '.join(emptied)}")
    kept_paths = [p for p, ok in zip(paths, readable) if ok]
    return Split(torch.from_numpy(decoded.images[readable]), torch.from_numpy(labels[readable]), kept_paths)


def _check_memory(trees: list[ClassTree], image_size: int, max_per_class: int | None) -> None:
    n_images = sum(len(first_n_per_class(tree.labels, max_per_class)) for tree in trees)
    needed = n_images * 3 * image_size * image_size
    if needed > MAX_DECODED_BYTES:
        raise EdgepruneError(
            f"{n_images} images at {image_size}x{image_size} need {needed / 2**30:.0f} GiB decoded: "
            "lower --image-size or limit the images per class"
        )


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, on a 0..1 scale (float64 sums, in chunks)."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(1024):
        values = chunk.to(torch.float64).div_(255)
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    # A constant channel has std 0; a floor keeps normalisation finite.
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def _resize_note(stats: FileStats, image_size: int) -> str | None:
    if not stats.widths:
        return None
    sizes = set(zip(stats.widths, stats.heights))
    if sizes == {(image_size, image_size)}:
        return None
    if all(w == h for w, h in sizes):
        return None  # square sources scale uniformly: nothing distorted
    return (
        f"source images of {min(stats.widths)}-{max(stats.widths)} x {min(stats.heights)}-"
        f"{max(stats.heights)} pixels resized to {image_size}x{image_size} (aspect ratio not kept)"
    )


def load_data_with_stats(
    spec: str = "digits",
    *,
    image_size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
    skip_bad: bool = False,
    normalization: str = "cifar",
    max_per_class: int | None = None,
    test_fraction: float = 0.2,
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
) -> LoadedData:
    """load_data, also returning what the source files looked like (for `data check`)."""
    _validate(image_size, val_fraction, test_fraction, normalization, max_per_class)
    log = log or (lambda _message: None)
    source = detect_source(spec, download=download)
    notes: list[str] = []
    stats: FileStats | None = None
    test: Split | None = None
    decode = dict(
        image_size=image_size, max_per_class=max_per_class, skip_bad=skip_bad, notes=notes, log=log, progress=progress
    )

    if source.kind == "digits":
        images, labels, class_names = load_digits_arrays()
        pool = _array_split(images, labels, image_size, max_per_class)
        name = "scikit-learn digits (bundled, 8x8 greyscale)"
    elif source.kind == "cifar10":
        arrays, class_names = load_cifar_arrays(source.path, download=download)
        pool = _array_split(*arrays["train"], image_size, max_per_class)
        test = _array_split(*arrays["test"], image_size, max_per_class)
        name = f"torchvision CIFAR-10 {source.path} (pickled batches, train/test)"
    elif source.kind == "imagefolder":
        train_tree = list_class_tree(source.path / "train")
        test_tree = list_class_tree(source.path / "test", classes=train_tree.class_names)
        class_names = train_tree.class_names
        _check_memory([train_tree, test_tree], image_size, max_per_class)
        stats = FileStats()
        pool = _decode_tree(train_tree, "train", stats=stats, **decode)
        test = _decode_tree(test_tree, "test", stats=stats, **decode)
        name = f"ImageFolder {spec} (train/test)"
        if source.ignored_folders:
            notes.append(
                f"ignored folder(s) next to train/ and test/: {', '.join(source.ignored_folders)} "
                "(the validation split is held out from train/)"
            )
    else:  # single-tree
        tree = list_class_tree(source.path)
        class_names = tree.class_names
        _check_memory([tree], image_size, max_per_class)
        stats = FileStats()
        pool = _decode_tree(tree, "the tree", stats=stats, **decode)
        name = f"class-folder tree {spec}"

    if max_per_class is not None:
        name += f", first {max_per_class} per class"
    if test is None:
        kept, held, note = stratified_holdout(
            pool.labels.numpy(), test_fraction, seed=seed, class_names=class_names, what="test"
        )
        pool, test = pool.subset(kept), pool.subset(held)
        name += f", stratified {1 - test_fraction:.0%}/{test_fraction:.0%} train/test split (seed {seed})"
        notes += [note] if note else []

    leaks = found_in(pixel_hashes(pool.images), pixel_hashes(test.images))
    if leaks:
        notes.append(
            f"{len(leaks)} test image(s) are exact copies of training images (identical pixels at "
            f"{image_size}x{image_size}): test figures may be optimistic; `edgeprune data check` lists them"
        )

    kept, held, note = stratified_holdout(
        pool.labels.numpy(), val_fraction, seed=seed, class_names=class_names, what="validation"
    )
    train, val = pool.subset(kept), pool.subset(held)
    notes += [note] if note else []
    if val_fraction == 0:
        notes.append("val_fraction is 0: no validation hold-out, the val split is empty")

    if normalization == "cifar":
        mean, std = CIFAR_MEAN, CIFAR_STD
    else:
        mean, std = channel_stats(train.images)
    if stats is not None and (resize_note := _resize_note(stats, image_size)):
        notes.append(resize_note)

    bundle = DataBundle(
        name=name,
        kind=source.kind,
        class_names=list(class_names),
        train=train,
        val=val,
        test=test,
        image_size=image_size,
        mean=tuple(mean),
        std=tuple(std),
        notes=notes,
        hflip=source.kind != "digits",
    )
    return LoadedData(bundle, stats)


def load_data(
    spec: str = "digits",
    *,
    image_size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
    skip_bad: bool = False,
    normalization: str = "cifar",
    max_per_class: int | None = None,
    test_fraction: float = 0.2,
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
) -> DataBundle:
    """Load `spec` (see `sources.ACCEPTED_FORMS`) as decoded uint8 train/val/test splits.

    test_fraction splits sources without a test set (digits, a single class-folder tree);
    val_fraction holds out a stratified validation split from the training data (0: none);
    max_per_class keeps the first N images per class of each split (sorted file order) before
    splitting; `log(str)` receives cache and skip messages, `progress(description, done, total)`
    reports decoding."""
    return load_data_with_stats(
        spec,
        image_size=image_size,
        val_fraction=val_fraction,
        seed=seed,
        download=download,
        skip_bad=skip_bad,
        normalization=normalization,
        max_per_class=max_per_class,
        test_fraction=test_fraction,
        log=log,
        progress=progress,
    ).bundle
