"""`load_data`: detect the source, decode once (through the disk cache), split, normalise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.data.bundle import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, DataBundle, Split
from edgeprune.data.cache import decode_cached
from edgeprune.data.decode import ProgressFn
from edgeprune.data.dedup import found_in, pixel_hashes
from edgeprune.data.options import DataOptions, SplitRecord
from edgeprune.data.sources import (
    ClassTree,
    detect_source,
    list_class_tree,
    list_extra_tree,
    load_cifar_arrays,
    load_digits_arrays,
)
from edgeprune.data.splits import first_n_per_class, stratified_fold, stratified_holdout
from edgeprune.errors import EdgepruneError

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
    skipped_links: list[str] = field(default_factory=list)  # links not followed while listing


@dataclass
class LoadedData:
    bundle: DataBundle
    files: FileStats | None  # None for digits / CIFAR pickles


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
    stats.skipped_links += tree.notes
    notes += tree.notes
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


SOURCES_WITH_A_TEST_SET = ("cifar10", "imagefolder")


def check_folds(kind: str, opts: DataOptions) -> None:
    """k-fold partitions an unsplit source; one with its own test set keeps that test set (folding
    it into the pool would test on images the source's authors meant for training, and change
    the benchmark), so folds > 1 is refused there before anything is decoded."""
    if opts.folds > 1 and kind in SOURCES_WITH_A_TEST_SET:
        raise EdgepruneError(
            f"folds = {opts.folds} needs a source without its own test set (digits or one "
            f"class-folder tree); {opts.spec} is {'CIFAR-10' if kind == 'cifar10' else 'an ImageFolder tree'} "
            "with a fixed train/test split: use folds = 1"
        )


def as_options(spec: str | DataOptions, options: dict) -> DataOptions:
    """A DataOptions from either an options object or a spec plus keywords (not both)."""
    if isinstance(spec, DataOptions):
        return spec.replace(**options) if options else spec
    return DataOptions(spec=spec, **options)


def _tree_fingerprint(root, trees: list[ClassTree]) -> str:
    """sha256 over the sorted (relative path, size) of every listed file: the data's identity,
    whatever folder it was copied to, and whatever subset or split is asked of it."""
    digest = hashlib.sha256(b"edgeprune-files-v1")
    entries = []
    for tree in trees:
        for path in tree.paths:
            try:
                size = os.path.getsize(path)
            except OSError:
                size = -1
            entries.append(f"{os.path.relpath(path, root)}|{size}")
    for entry in sorted(entries):
        digest.update(entry.encode() + b"\n")
    return digest.hexdigest()


def _array_fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256(b"edgeprune-arrays-v1")
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _add_extra_train(train: Split, test: Split, folder: str, class_names, fingerprint: str, image_size: int,
                     skip_bad: bool, notes: list[str], log, progress) -> tuple[Split, int, str]:
    """The training split with DataOptions.extra_train's images appended, their count, and the
    fingerprint over both (unchanged when the tree holds no image: the training data is the same).
    They join after the base data was split, so val and test are the base data's alone and the
    base images land in the same splits as without them."""
    tree = list_extra_tree(Path(folder), list(class_names))
    if not tree.paths:
        notes.append(f"extra_train {folder} holds no images yet")
        return train, 0, fingerprint
    extra = _decode_tree(tree, f"extra_train {folder}", image_size=image_size, max_per_class=None,
                         skip_bad=skip_bad, stats=FileStats(), notes=notes, log=log, progress=progress)
    leaks = found_in(pixel_hashes(test.images), pixel_hashes(extra.images))
    if leaks:
        notes.append(f"{len(leaks)} extra_train image(s) are exact copies of test images (identical pixels at "
                     f"{image_size}x{image_size}): test figures may be optimistic")
    digest = hashlib.sha256(b"edgeprune-extra-train-v1")
    digest.update(fingerprint.encode() + b"\n")
    digest.update(_tree_fingerprint(Path(folder), [tree]).encode())
    paths = train.paths + extra.paths if train.paths is not None and extra.paths is not None else None
    merged = Split(torch.cat([train.images, extra.images]), torch.cat([train.labels, extra.labels]), paths)
    return merged, len(extra), digest.hexdigest()


def load_data_with_stats(
    spec: str | DataOptions = "digits",
    *,
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
    **options,
) -> LoadedData:
    """load_data, also returning what the source files looked like (for `data check`)."""
    opts = as_options(spec, options)
    spec, image_size, seed = opts.spec, opts.image_size, opts.seed
    val_fraction, test_fraction, max_per_class = opts.val_fraction, opts.test_fraction, opts.max_per_class
    log = log or (lambda _message: None)
    source = detect_source(spec, download=opts.download)
    check_folds(source.kind, opts)
    notes: list[str] = []
    stats: FileStats | None = None
    test: Split | None = None
    decode = dict(
        image_size=image_size, max_per_class=max_per_class, skip_bad=opts.skip_bad, notes=notes, log=log, progress=progress
    )

    if source.kind == "digits":
        images, labels, class_names = load_digits_arrays()
        pool = _array_split(images, labels, image_size, max_per_class)
        name = "scikit-learn digits (bundled, 8x8 greyscale)"
        fingerprint = _array_fingerprint(images, labels)
    elif source.kind == "cifar10":
        arrays, class_names = load_cifar_arrays(source.path, download=opts.download)
        fingerprint = _array_fingerprint(*arrays["train"], *arrays["test"])
        pool = _array_split(*arrays["train"], image_size, max_per_class)
        test = _array_split(*arrays["test"], image_size, max_per_class)
        name = f"torchvision CIFAR-10 {source.path} (pickled batches, train/test)"
    elif source.kind == "imagefolder":
        train_tree = list_class_tree(source.path / "train")
        test_tree = list_class_tree(source.path / "test", classes=train_tree.class_names)
        class_names = train_tree.class_names
        fingerprint = _tree_fingerprint(source.path, [train_tree, test_tree])
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
        fingerprint = _tree_fingerprint(source.path, [tree])
        _check_memory([tree], image_size, max_per_class)
        stats = FileStats()
        pool = _decode_tree(tree, "the tree", stats=stats, **decode)
        name = f"class-folder tree {spec}"

    if max_per_class is not None:
        name += f", first {max_per_class} per class"
    own_test_split = test is None
    if own_test_split and opts.folds > 1:
        kept, held = stratified_fold(
            pool.labels.numpy(), opts.folds, opts.fold, seed=seed, class_names=class_names
        )
        pool, test = pool.subset(kept), pool.subset(held)
        test_fraction = 1 / opts.folds  # recorded: the share each fold's test part holds
        name += f", stratified {opts.folds}-fold split, fold {opts.fold} (0..{opts.folds - 1}) as test (seed {seed})"
    elif own_test_split:
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
    extra_count = 0
    if opts.extra_train is not None:
        train, extra_count, fingerprint = _add_extra_train(
            train, test, opts.extra_train, class_names, fingerprint, image_size, opts.skip_bad, notes, log, progress)
        if extra_count:
            name += f", plus {extra_count} training-only image(s) from {opts.extra_train}"

    if opts.normalization == "cifar":
        mean, std = CIFAR_MEAN, CIFAR_STD
    elif opts.normalization == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
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
        options=opts,
        split=SplitRecord(
            seed=seed, val_fraction=val_fraction, test_fraction=test_fraction if own_test_split else None,
            max_per_class=max_per_class, image_size=image_size, fingerprint=fingerprint,
            folds=opts.folds, fold=opts.fold, extra_train=extra_count,
        ),
    )
    return LoadedData(bundle, stats)


def load_data(
    spec: str | DataOptions = "digits",
    *,
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
    **options,
) -> DataBundle:
    """Load a data set as decoded uint8 train/val/test splits: `load_data("digits")`,
    `load_data(path, image_size=64, seed=3)` or `load_data(DataOptions(...))` (see DataOptions for
    every option; `sources.ACCEPTED_FORMS` for the specs).

    test_fraction splits sources without a test set (digits, a single class-folder tree);
    folds > 1 with fold f instead tests on the f-th of `folds` disjoint stratified parts of such a
    source (k-fold cross-validation; refused for a source with its own test set);
    val_fraction holds out a stratified validation split from the training data (0: none);
    max_per_class keeps the first N images per class of each split (sorted file order) before
    splitting; `log(str)` receives cache and skip messages, `progress(description, done, total)`
    reports decoding. The bundle's `split` records how it was split and the data's fingerprint."""
    return load_data_with_stats(spec, log=log, progress=progress, **options).bundle
