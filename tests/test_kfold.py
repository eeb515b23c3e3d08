"""Stratified k-fold (DataOptions.folds / fold): the test parts of the folds are disjoint and cover
every image once, are stratified, fold f's train/val/test are disjoint, folds = 1 is the old split
exactly, and bad fold values or a source with its own test set are refused."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

from edgeprune.data import DataOptions, SplitRecord, check_same_split, load_data, split_defaults
from edgeprune.data.sources import load_digits_arrays
from edgeprune.errors import EdgepruneError

FOLDS = 5
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))


def _rows(images) -> Counter:
    """A split as a multiset of images (digits has repeated images, so a multiset, not a set)."""
    array = np.asarray(images)
    return Counter(array[i].tobytes() for i in range(len(array)))


@pytest.fixture(scope="module")
def digits_arrays():
    return load_digits_arrays()


@pytest.fixture(scope="module")
def digits_folds():
    # image_size 8 is digits' own size: the loaded images are the bundled arrays, unresized
    return [load_data("digits", image_size=8, folds=FOLDS, fold=f) for f in range(FOLDS)]


def test_test_parts_are_disjoint_and_cover_every_image_once(digits_folds, digits_arrays):
    images, labels, _ = digits_arrays
    tested = Counter()
    for bundle in digits_folds:
        tested += _rows(bundle.test.images.numpy())
    assert tested == _rows(images)  # every image in exactly one fold's test set
    assert sum(len(b.test) for b in digits_folds) == len(labels)


def test_each_fold_is_stratified_within_one_image(digits_folds, digits_arrays):
    _, labels, _ = digits_arrays
    totals = np.bincount(labels)
    for bundle in digits_folds:
        counts = np.bincount(bundle.test.labels.numpy(), minlength=len(totals))
        assert np.all(np.abs(counts - totals / FOLDS) < 1), counts


def test_a_folds_train_val_and_test_are_disjoint(digits_folds, digits_arrays):
    images, labels, _ = digits_arrays
    for f, bundle in enumerate(digits_folds):
        train, val, test = (_rows(s.images.numpy()) for s in (bundle.train, bundle.val, bundle.test))
        assert train + val + test == _rows(images)  # together the whole pool, none twice
        assert len(bundle.val) == math.ceil(0.1 * (len(labels) - len(bundle.test)))
        split = bundle.split
        assert (split.folds, split.fold, split.test_fraction) == (FOLDS, f, 1 / FOLDS)
        assert f"{FOLDS}-fold" in bundle.name


def test_the_folds_depend_on_the_seed_only_through_one_partition(digits_arrays):
    first = load_data("digits", image_size=8, folds=3, fold=1, seed=7)
    again = load_data("digits", image_size=8, folds=3, fold=1, seed=7)
    other = load_data("digits", image_size=8, folds=3, fold=1, seed=8)
    assert _rows(first.test.images.numpy()) == _rows(again.test.images.numpy())
    assert _rows(first.test.images.numpy()) != _rows(other.test.images.numpy())


@pytest.mark.parametrize("seed", [0, 3])
def test_one_fold_is_the_old_split_exactly(digits_arrays, seed):
    """folds = 1 loads what the loader gave before k-fold: recomputed here the old way."""
    images, labels, _ = digits_arrays
    n = len(labels)
    pool, test = train_test_split(np.arange(n), test_size=math.ceil(0.2 * n), stratify=labels,
                                  random_state=seed, shuffle=True)
    pool = np.sort(pool)
    kept, held = train_test_split(np.arange(len(pool)), test_size=math.ceil(0.1 * len(pool)),
                                  stratify=labels[pool], random_state=seed, shuffle=True)
    expected = {"train": pool[np.sort(kept)], "val": pool[np.sort(held)], "test": np.sort(test)}
    bundle = load_data("digits", image_size=8, seed=seed)
    for name, indices in expected.items():
        split = getattr(bundle, name)
        assert np.array_equal(split.images.numpy(), images[indices]), name  # same images, same order
        assert np.array_equal(split.labels.numpy(), labels[indices]), name
    # the checkpoint's record reads as before: no k-fold keys
    assert set(bundle.split.to_dict()) == {"seed", "val_fraction", "test_fraction", "max_per_class",
                                           "image_size", "fingerprint"}


@pytest.mark.parametrize("values, message", [
    ({"folds": 5, "fold": 5}, "fold 5 does not exist"),
    ({"folds": 5, "fold": -1}, "fold"),
    ({"folds": 0}, "folds"),
    ({"folds": 2.5}, "folds"),
    ({"folds": True}, "folds"),
    ({"fold": 1}, "fold 1 does not exist"),
])
def test_bad_fold_values_are_refused(values, message):
    with pytest.raises(EdgepruneError, match=message):
        DataOptions(**values)


def test_a_class_smaller_than_the_folds_is_refused():
    with pytest.raises(EdgepruneError, match="at least 5 images"):
        load_data("digits", image_size=8, max_per_class=4, folds=5)


def _image_folder(root: Path) -> Path:
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    return root


def test_a_source_with_its_own_test_set_refuses_folds(tmp_path):
    tree = _image_folder(tmp_path / "tree")
    with pytest.raises(EdgepruneError, match="own test set"):
        load_data(str(tree), image_size=8, folds=3)
    assert len(load_data(str(tree), image_size=8).test) == 12  # folds = 1 keeps its test/ folder


def test_a_study_refuses_folds_on_a_source_with_its_own_test_set(tmp_path):
    from edgeprune.study import parse_config

    tree = _image_folder(tmp_path / "tree")
    text = (PROJECT_ROOT / "configs" / "digits-quick.toml").read_text()
    text = text.replace('spec = "digits"', f'spec = "{tree}"')
    assert str(tree) in text
    with pytest.raises(EdgepruneError, match="own test set") as exc:
        parse_config("folds = 3\n" + text.replace("folds = 1\n", ""), path=str(tmp_path / "s.toml"))
    assert "folds" in str(exc.value)


def test_the_record_tells_folds_apart_and_old_records_still_load(digits_folds):
    one, two = (digits_folds[i].split for i in (1, 2))
    with pytest.raises(EdgepruneError, match="fold 1 vs 2"):
        check_same_split(one.to_dict(), two, allow_other_split=False, what="the model")
    assert check_same_split(two.to_dict(), two, allow_other_split=False, what="the model") is None
    assert split_defaults(two.to_dict())["fold"] == 2  # commands default to the model's own fold
    assert DataOptions(**split_defaults(two.to_dict())).folds == FOLDS
    old = {k: v for k, v in one.to_dict().items() if k not in ("folds", "fold")}  # before k-fold
    assert SplitRecord.from_dict(old).folds == 1
    with pytest.raises(EdgepruneError, match="another split"):
        check_same_split(old, one, allow_other_split=False, what="the model")


def test_a_study_runs_fold_f_on_part_f_and_keeps_one_split_keys():
    from edgeprune.study import parse_config, plan_study
    from edgeprune.study.plan import fold_data

    text = (PROJECT_ROOT / "configs" / "digits-quick.toml").read_text()
    single = parse_config(text)
    assert fold_data(single, 0) == single.data
    for exp in plan_study(single, fingerprint="0" * 64):  # keys as before k-fold: no fold keys
        assert "folds" not in exp.config["data"] and "fold" not in exp.config["data"]
    kfold = parse_config("folds = 3\n" + text.replace("folds = 1\n", ""))
    assert [(fold_data(kfold, f).folds, fold_data(kfold, f).fold) for f in range(3)] == [(3, 0), (3, 1), (3, 2)]
    assert all(fold_data(kfold, f).seed == kfold.data.seed for f in range(3))
    planned = plan_study(kfold, fingerprint="0" * 64)
    assert {(e.fold, e.config["data"]["fold"]) for e in planned} == {(0, 0), (1, 1), (2, 2)}


def test_a_planned_fold_loads_its_own_part():
    """What the runner does per fold: the experiment's stored data options load part f."""
    from edgeprune.study import parse_config, plan_study
    from edgeprune.study.execute import load_fold_data

    text = (PROJECT_ROOT / "configs" / "digits-quick.toml").read_text()
    kfold = parse_config("folds = 3\n" + text)
    fingerprint = load_data(kfold.data).split.fingerprint
    baselines = [e for e in plan_study(kfold, fingerprint=fingerprint) if e.kind == "baseline"]
    tested = Counter()
    for exp in baselines:
        data = load_fold_data(exp.settings)
        assert (data.split.folds, data.split.fold) == (3, exp.fold)
        tested += _rows(data.test.images.numpy())
    whole = load_data(kfold.data)  # folds = 1: train + val + test is every image once
    assert tested == sum((_rows(s.images.numpy()) for s in (whole.train, whole.val, whole.test)), Counter())
