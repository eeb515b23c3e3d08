"""How to load a data set (one options object for every loader and command) and how it was split.

`DataOptions` is parsed once at the edge (CLI flags, a study config, Python keywords) and passed
down whole, so no option is lost between the command and the loader. `SplitRecord` is what a
checkpoint remembers about the split it was trained on; commands that evaluate or fine-tune a
checkpoint default to it and refuse another split of the same data (a test-set leak)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.validation import RANGES, check_number, check_option

NORMALIZATIONS = ("cifar", "imagenet", "dataset")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = int(RANGES["image_size"].lo), int(RANGES["image_size"].hi)


@dataclass(frozen=True)
class DataOptions:
    spec: str = "digits"  # see edgeprune.data.sources.ACCEPTED_FORMS
    image_size: int = 32
    val_fraction: float = 0.1  # stratified hold-out of the training data for decisions (0: none)
    test_fraction: float = 0.2  # for sources without a test set (digits, one class-folder tree)
    seed: int = 0  # the split's seed (and nothing else)
    # k-fold: folds > 1 tests on the fold-th of `folds` disjoint stratified parts of an unsplit
    # source (test_fraction unused), training and validating on the rest; 1: one hold-out.
    folds: int = 1
    fold: int = 0
    normalization: str = "cifar"  # cifar | imagenet (statistics) | dataset (computed on train)
    max_per_class: int | None = None  # first N images per class of each split (quick runs)
    download: bool = False  # CIFAR-10 only
    skip_bad: bool = False  # leave unreadable files out instead of stopping
    # A class-folder tree (<class>/<image>, classes a subset of the data's) added to the training
    # split only, after the base data is split: never to val or test, so the images that judge a
    # model are the base data's alone (the fleet's labelled parts, edgeprune.fleet.retrain). The
    # fingerprint covers it; max_per_class does not limit it.
    extra_train: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        # The ranges live in edgeprune.validation with every other numeric option's.
        if not isinstance(self.spec, str) or not self.spec:
            raise EdgepruneError(f"data spec must be a non-empty string, got {self.spec!r}")
        size = RANGES["image_size"]
        check_number(self.image_size, "--image-size", integer=True)
        if not size.lo <= self.image_size <= size.hi:
            raise EdgepruneError(
                f"--image-size {self.image_size} is out of range: use {size.lo}..{size.hi} "
                "pixels (32 for CIFAR-sized inputs)"
            )
        check_option("val_fraction", self.val_fraction)
        check_option("test_fraction", self.test_fraction)
        check_option("seed", self.seed, name="--seed")
        check_number(self.folds, "folds", integer=True, min=1)
        check_number(self.fold, "fold", integer=True, min=0)
        if self.fold >= self.folds:
            raise EdgepruneError(
                f"fold {self.fold} does not exist with folds = {self.folds}: folds are numbered "
                f"0..{self.folds - 1}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise EdgepruneError(
                f"unknown normalization {self.normalization!r}: choose one of {', '.join(NORMALIZATIONS)}"
            )
        check_option("max_per_class", self.max_per_class, optional=True)
        if self.extra_train is not None and (not isinstance(self.extra_train, str) or not self.extra_train):
            raise EdgepruneError(f"extra_train must name a class-folder tree, got {self.extra_train!r}")

    def replace(self, **changes: Any) -> DataOptions:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SplitRecord:
    """Which images went to train / val / test: everything the split depends on, and the data's
    identity (`fingerprint`: a hash over the sorted relative file paths and sizes, or the bundled
    arrays' bytes), so another split of the *same* data can be told from other data."""

    seed: int
    val_fraction: float
    test_fraction: float | None  # None: the source has its own test set (ImageFolder, CIFAR-10)
    max_per_class: int | None
    image_size: int
    fingerprint: str
    folds: int = 1  # k-fold: the test set is part `fold` of `folds` (test_fraction is then 1/folds)
    fold: int = 0
    extra_train: int = 0  # images of DataOptions.extra_train added to the training split

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self.folds == 1:  # a one-split record reads exactly as before k-fold existed
            del values["folds"], values["fold"]
        if not self.extra_train:
            del values["extra_train"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SplitRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        optional = {"folds", "fold", "extra_train"}  # records written before k-fold have one split
        missing = names - optional - set(values)
        if missing:
            raise EdgepruneError(f"split record lacks {sorted(missing)}")
        return cls(**{k: values[k] for k in names if k in values})

    def partition_differences(self, other: SplitRecord) -> list[str]:
        """What differs between the two splits in a way that moves images between train and test
        (or val); the image size does not: the same files land in the same split at any size."""
        keys = ("seed", "val_fraction", "test_fraction", "max_per_class", "folds", "fold")
        return [f"{k} {getattr(self, k)} vs {getattr(other, k)}" for k in keys if getattr(self, k) != getattr(other, k)]


def split_defaults(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The DataOptions fields a checkpoint's split record fixes (seed, fractions, max_per_class,
    and the fold of a k-fold split)."""
    if not recorded:
        return {}
    defaults = {"seed": recorded["seed"], "val_fraction": recorded["val_fraction"],
                "max_per_class": recorded.get("max_per_class")}
    if recorded.get("folds", 1) > 1:
        defaults |= {"folds": recorded["folds"], "fold": recorded["fold"]}
    if recorded.get("test_fraction") is not None:
        defaults["test_fraction"] = recorded["test_fraction"]
    return defaults


def check_same_split(
    recorded: dict[str, Any] | None, actual: SplitRecord, *, allow_other_split: bool, what: str
) -> str | None:
    """Refuse another split of the data a model was trained on (its test images may be training
    images): same fingerprint and different split parameters raise, unless allow_other_split, which
    returns a warning to print beside every figure. Different data (another fingerprint) cannot
    leak and returns a note; a model without a split record returns a note too."""
    if not recorded:
        return (f"{what} records no data split (written by an older edgeprune): cannot check that "
                "its test images were not used for training")
    before = SplitRecord.from_dict(recorded)
    if before.fingerprint != actual.fingerprint:
        return (f"{what} was trained on other data (fingerprint {before.fingerprint[:12]}, this data "
                f"{actual.fingerprint[:12]}): no train/test leak is possible")
    differences = before.partition_differences(actual)
    if not differences:
        return None
    detail = "; ".join(differences)
    if not allow_other_split:
        raise EdgepruneError(
            f"{what} was trained on another split of this same data ({detail}; recorded vs asked): "
            "its test images may be training images. Leave --seed / --val-fraction / "
            "--max-per-class unset to use the recorded split, or pass --allow-other-split "
            "(allow_other_split=True) to accept optimistic figures"
        )
    return (f"OTHER SPLIT of the training data ({detail}): figures may be optimistic, test "
            "images may have been trained on (--allow-other-split)")
