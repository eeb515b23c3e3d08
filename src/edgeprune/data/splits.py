"""Deterministic subsetting, stratified hold-outs (train/test for unsplit sources, train/val) and
stratified k-fold test parts (scikit-learn's StratifiedKFold)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from edgeprune.errors import EdgepruneError


def first_n_per_class(labels: np.ndarray, n: int | None) -> np.ndarray:
    """Indices of the first n items of each class, in the original (sorted file) order."""
    if n is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        keep[np.flatnonzero(labels == label)[:n]] = True
    return np.flatnonzero(keep)


def stratified_holdout(
    labels: np.ndarray, fraction: float, *, seed: int, class_names: list[str], what: str
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Split indices into (kept, held out), each sorted, stratified by label, plus a note when the
    hold-out had to be enlarged to hold one image of every class.

    fraction 0 holds nothing out."""
    n = len(labels)
    if fraction == 0:
        return np.arange(n), np.arange(0), None
    counts = np.bincount(labels, minlength=len(class_names))
    too_small = [f"{class_names[i]} ({counts[i]})" for i in np.flatnonzero((counts > 0) & (counts < 2))]
    if too_small:
        raise EdgepruneError(
            f"cannot hold out a stratified {what} split: every class needs at least 2 images, "
            f"but these have fewer: {', '.join(too_small)}"
        )
    n_classes = int(np.count_nonzero(counts))
    requested = math.ceil(fraction * n)
    n_holdout = max(requested, n_classes)
    if n - n_holdout < n_classes:
        raise EdgepruneError(
            f"too few images ({n}) for a stratified {what} split of {fraction:g} over {n_classes} "
            "classes: lower the fraction or use more images per class"
        )
    kept, held = train_test_split(
        np.arange(n), test_size=n_holdout, stratify=labels, random_state=seed, shuffle=True
    )
    note = None
    if n_holdout > requested:
        note = (
            f"{what} split enlarged to {n_holdout} images (one per class) from the {requested} "
            f"that a fraction of {fraction:g} gives"
        )
    return np.sort(kept), np.sort(held), note


def stratified_fold(
    labels: np.ndarray, folds: int, fold: int, *, seed: int, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, test), each sorted: the test part is the fold-th of `folds`
    disjoint stratified parts, so over fold = 0..folds-1 every index is tested exactly once.

    The parts come from one StratifiedKFold(shuffle=True, random_state=seed) of all the labels,
    whatever the fold asked: each class is dealt to the parts in a seeded random order, its count
    in any two parts differing by at most one image."""
    counts = np.bincount(labels, minlength=len(class_names))
    too_small = [f"{class_names[i]} ({counts[i]})" for i in np.flatnonzero((counts > 0) & (counts < folds))]
    if too_small:
        raise EdgepruneError(
            f"cannot split into {folds} stratified folds: every class needs at least {folds} images "
            f"(one per fold's test set), but these have fewer: {', '.join(too_small)}. "
            "Lower folds or use more images per class"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    kept, test = list(splitter.split(np.zeros(len(labels)), labels))[fold]
    return np.sort(kept), np.sort(test)
