"""edgeprune.data: sources, splits, the decode cache, BatchLoader, bad input and `data check`."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.data import CIFAR_MEAN, CIFAR_STD, BatchLoader, DataBundle, Split, check_data, load_data
from edgeprune.errors import EdgepruneError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Every test decodes into its own cache, never ~/.cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(cache))
    return cache


def write_image(path: Path, seed: int, size=(12, 10), mode="RGB") -> None:
    """A random-noise image: distinct seeds give distinct pixels, so no accidental duplicates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)


def make_tree(root: Path, counts: dict[str, int], suffix=".png") -> Path:
    """counts maps "train/cat" (or "cat") to a number of images written there."""
    seed = 0
    for folder, n in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            seed += 1
            write_image(root / folder / f"{i:03d}{suffix}", seed=seed)
    return root


# --- sources --------------------------------------------------------------------------------


def test_digits_shapes_classes_and_stratified_val():
    bundle = load_data("digits", image_size=16, val_fraction=0.2, seed=3)
    assert isinstance(bundle, DataBundle) and bundle.kind == "digits" and "digits" in bundle.name
    assert bundle.class_names == [str(d) for d in range(10)]
    total = len(bundle.train) + len(bundle.val) + len(bundle.test)
    assert total == 1797 and len(bundle.test) == 360  # ceil(0.2 * 1797)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 16, 16)
        assert split.labels.dtype == torch.int64 and split.paths is None
    assert int(bundle.train.images.max()) == 255  # 0..16 scaled to 0..255
    assert torch.equal(bundle.train.images[:, 0], bundle.train.images[:, 2])  # grey in 3 channels
    train_counts = torch.bincount(bundle.train.labels, minlength=10).float()
    val_counts = torch.bincount(bundle.val.labels, minlength=10).float()
    # Stratified: every class in val, in the same proportion as in train (within rounding).
    ratio = val_counts / (train_counts + val_counts)
    assert (val_counts > 0).all() and (ratio - 0.2).abs().max() < 0.02
    assert (bundle.mean, bundle.std) == (CIFAR_MEAN, CIFAR_STD)
    # Fixed seed: the same split again.
    again = load_data("digits", image_size=16, val_fraction=0.2, seed=3)
    assert torch.equal(again.val.images, bundle.val.images)


def test_cifar_imagefolder(cifar_jpeg):
    bundle = load_data(str(cifar_jpeg), max_per_class=20, val_fraction=0.1)
    assert bundle.kind == "imagefolder" and bundle.name.startswith(f"ImageFolder {cifar_jpeg}")
    assert len(bundle.class_names) == 10 and "airplane" in bundle.class_names
    assert len(bundle.train) + len(bundle.val) == 200 and len(bundle.val) == 20
    assert len(bundle.test) == 200
    assert torch.bincount(bundle.val.labels, minlength=10).tolist() == [2] * 10
    assert bundle.train.images.shape[1:] == (3, 32, 32)
    # max_per_class takes the first files in sorted order.
    test_airplanes = [p for p in bundle.test.paths if "/airplane/" in p]
    assert [Path(p).name for p in test_airplanes[:2]] == ["0000.jpg", "0001.jpg"]
    assert not bundle.notes


def test_magnetic_tile_single_tree_is_resized_to_three_channels(magnetic_tile):
    bundle = load_data(str(magnetic_tile), max_per_class=10, image_size=40, test_fraction=0.3)
    assert bundle.kind == "single-tree" and "class-folder tree" in bundle.name
    assert bundle.class_names == ["blowhole", "break", "crack", "fray", "free", "uneven"]
    assert bundle.train.images.shape[1:] == (3, 40, 40)
    assert torch.equal(bundle.test.images[:, 0], bundle.test.images[:, 1])  # greyscale source
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 60
    assert torch.bincount(bundle.test.labels, minlength=6).tolist() == [3] * 6
    assert any("aspect ratio not kept" in note for note in bundle.notes)


def test_dataset_normalisation_uses_training_statistics(tmp_path):
    root = make_tree(tmp_path / "tree", {"a": 6, "b": 6})
    bundle = load_data(str(root), normalization="dataset", image_size=8, val_fraction=0)
    pixels = bundle.train.images.double() / 255
    expected_mean = pixels.mean(dim=(0, 2, 3))
    expected_std = pixels.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    assert np.allclose(bundle.mean, expected_mean, atol=1e-4)
    assert np.allclose(bundle.std, expected_std, atol=1e-4)
    assert len(bundle.val) == 0 and any("no validation" in note for note in bundle.notes)


def test_cifar_pickled_root(tmp_path, monkeypatch):
    """A torchvision CIFAR-10 root, built tiny (torchvision's md5 check patched out)."""
    from torchvision.datasets import CIFAR10

    batches = tmp_path / "root" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(20)]}
        (batches / name).write_bytes(pickle.dumps(batch))
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    for spec in (tmp_path / "root", batches):
        bundle = load_data(str(spec), max_per_class=4)
        assert bundle.kind == "cifar10" and "CIFAR-10" in bundle.name
        assert bundle.class_names == [f"c{i}" for i in range(10)]
        assert len(bundle.train) + len(bundle.val) == 40 and len(bundle.test) == 20  # 2 per class in test_batch
        assert bundle.test.paths is None and bundle.test.images.shape[1:] == (3, 32, 32)


# --- BatchLoader ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", image_size=16)


def test_batchloader_shapes_and_normalisation(digits):
    loader = BatchLoader(digits.test, 64, mean=digits.mean, std=digits.std)
    assert len(loader) == 6  # ceil(360 / 64)
    batches = list(loader)
    assert len(batches) == 6 and batches[-1][0].shape == (360 - 5 * 64, 3, 16, 16)
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    mean = torch.tensor(digits.mean).view(1, 3, 1, 1)
    std = torch.tensor(digits.std).view(1, 3, 1, 1)
    expected = (digits.test.images[:64].float() / 255 - mean) / std
    assert torch.allclose(x, expected, atol=1e-5) and torch.equal(y, digits.test.labels[:64])
    assert len(BatchLoader(digits.test, 64, mean=digits.mean, std=digits.std, drop_last=True)) == 5
    assert len(list(BatchLoader(Split(digits.test.images[:0], digits.test.labels[:0], None), 8,
                                mean=digits.mean, std=digits.std))) == 0


def test_batchloader_augments_in_train_mode_only(digits):
    # Labels 0..N-1 identify each image's original after shuffling.
    images = digits.train.images[:64]
    split = Split(images, torch.arange(64), None)
    raw = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # x == raw pixel values
    eval_x = torch.cat([x for x, _ in BatchLoader(split, 20, **raw)])
    assert torch.equal(eval_x, images.float())  # eval: split order, pixels untouched

    loader = BatchLoader(split, 64, train=True, seed=1, **raw)
    x, y = next(iter(loader))
    assert not torch.equal(y, torch.arange(64))  # shuffled
    # Each augmented image is a window of its zero-padded original, maybe mirrored ...
    assert all(_is_crop(x[k], images[y[k]]) for k in range(64))
    # ... and most differ from the original (9x9 offsets x 2 flips, 1/162 chance of identity).
    assert sum(not torch.equal(x[k], images[y[k]].float()) for k in range(64)) > 48

    # Deterministic given the seed; reshuffled and re-augmented at every epoch.
    same = BatchLoader(split, 64, train=True, seed=1, **raw)
    first_x, first_y = next(iter(same))
    assert torch.equal(first_x, x) and torch.equal(first_y, y)
    second_x, second_y = next(iter(same))
    assert not torch.equal(second_y, first_y) and sorted(second_y.tolist()) == list(range(64))


def _is_crop(augmented: torch.Tensor, original: torch.Tensor, padding: int = 4) -> bool:
    padded = torch.nn.functional.pad(original.float(), (padding,) * 4)
    size = original.shape[-1]
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            window = padded[:, dy : dy + size, dx : dx + size]
            if torch.equal(window, augmented) or torch.equal(window.flip(-1), augmented):
                return True
    return False


# --- disk cache -----------------------------------------------------------------------------


def test_disk_cache_is_hit_on_second_load(tmp_path, private_cache):
    root = make_tree(tmp_path / "tree", {"train/a": 3, "train/b": 3, "test/a": 2, "test/b": 2})
    first_log, second_log = [], []
    first = load_data(str(root), image_size=8, val_fraction=0, log=first_log.append)
    assert sum("saved" in line for line in first_log) == 2  # train and test file lists
    entries = list((private_cache / "data").iterdir())
    assert len(entries) == 2
    assert sorted(p.name for p in entries[0].iterdir()) == ["images.npy", "meta.json", "sizes.npy"]

    second = load_data(str(root), image_size=8, val_fraction=0, log=second_log.append)
    assert sum("using" in line for line in second_log) == 2 and not any("saved" in l for l in second_log)
    assert torch.equal(first.train.images, second.train.images)

    # A changed file or another image size misses the cache.
    write_image(root / "test" / "a" / "000.png", seed=999)
    third_log = []
    load_data(str(root), image_size=8, val_fraction=0, log=third_log.append)
    assert sum("using" in l for l in third_log) == 1 and sum("saved" in l for l in third_log) == 1


# --- bad input ------------------------------------------------------------------------------


def test_corrupt_image_is_named_or_skipped(tmp_path):
    root = make_tree(tmp_path / "tree", {"train/a": 4, "train/b": 4, "test/a": 2, "test/b": 2}, suffix=".jpg")
    bad = root / "train" / "b" / "zz_corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    with pytest.raises(EdgepruneError, match="zz_corrupt.jpg.*--skip-bad"):
        load_data(str(root), image_size=8)
    logged = []
    bundle = load_data(str(root), image_size=8, skip_bad=True, log=logged.append)
    assert len(bundle.train) + len(bundle.val) == 8
    assert any("skipped 1 unreadable" in note and "zz_corrupt.jpg" in note for note in bundle.notes)
    assert any("zz_corrupt.jpg" in line for line in logged)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"train/a": 3, "train/b": 0, "test/a": 2, "test/b": 2}, r"empty class folder.*train/b"),
        ({"a": 3}, r"1 class folder \(a\).*at least 2"),
        ({"train/a": 3, "train/b": 3, "test/a": 2}, r"missing from .*test: b"),
        ({"train/a": 3, "train/b": 3, "test/a": 2, "test/b": 2, "test/c": 2}, r"not in the training folder: c"),
        ({"train/a": 3, "train/b": 3}, r"has train/ but no test/"),
    ],
    ids=["empty-class", "single-class", "class-missing-from-test", "class-missing-from-train", "no-test"],
)
def test_bad_trees(tmp_path, counts, message):
    root = make_tree(tmp_path / "tree", counts)
    with pytest.raises(EdgepruneError, match=message):
        load_data(str(root), image_size=8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spec": "no/such/folder"}, r"no such file or folder.*--download.*ImageFolder"),
        ({"image_size": 4}, r"--image-size 4 is out of range"),
        ({"image_size": 100_000}, r"--image-size 100000 is out of range"),
        ({"val_fraction": 1.0}, r"--val-fraction must be in \[0, 1\)"),
        ({"val_fraction": -0.1}, r"--val-fraction must be in \[0, 1\)"),
        ({"normalization": "imagenet-ish"}, r"unknown normalization"),
        ({"max_per_class": 0}, r"--max-per-class must be >= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(EdgepruneError, match=message):
        load_data(**{"spec": "digits", **kwargs})


def test_unrecognised_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgepruneError, match="no class folders.*accepted --data forms"):
        load_data(str(tmp_path / "empty"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(EdgepruneError, match="is a file, not a folder"):
        load_data(str(tmp_path / "file.txt"))


# --- duplicates and `data check` ------------------------------------------------------------


def test_train_test_leak_is_reported(tmp_path):
    root = make_tree(tmp_path / "tree", {"train/a": 4, "train/b": 4, "test/a": 2, "test/b": 2})
    shutil.copy(root / "train" / "a" / "001.png", root / "test" / "a" / "leaked.png")
    shutil.copy(root / "train" / "b" / "000.png", root / "train" / "b" / "copy.png")
    bundle = load_data(str(root), image_size=8)
    assert any(note.startswith("1 test image(s) are exact copies") for note in bundle.notes)

    report = check_data(str(root), image_size=8)
    assert report["duplicates"]["across"]["train/test"]["count"] + report["duplicates"]["across"]["val/test"]["count"] == 1
    assert report["duplicates"]["within"]["train"] + report["duplicates"]["across"]["train/val"]["count"] == 1
    example = (report["duplicates"]["across"]["train/test"]["examples"] or report["duplicates"]["across"]["val/test"]["examples"])[0]
    assert example["test"].endswith("leaked.png")


def test_cli_data_check_json_and_errors(tmp_path, capsys):
    from typer.testing import CliRunner

    from edgeprune.cli import main
    from edgeprune.cli.app import app

    root = make_tree(tmp_path / "tree", {"a": 10, "b": 10})
    write_image(root / "b" / "zz_grey.png", seed=77, size=(20, 30), mode="L")
    result = CliRunner().invoke(app, ["data", "check", "--data", str(root), "--image-size", "8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "single-tree" and report["classes"] == ["a", "b"]
    assert sum(report["totals"].values()) == 21
    assert report["counts"]["test"] == {"a": 2, "b": 3}  # ceil(0.2 * 21) = 5, stratified
    assert report["files"]["modes"] == {"RGB": 20, "L": 1}
    assert report["files"]["width"] == {"min": 12, "max": 20}
    assert report["duplicates"]["across"]["train/test"]["count"] == 0

    table = CliRunner().invoke(app, ["data", "check", "--data", str(root), "--image-size", "8"])
    assert table.exit_code == 0 and "class-folder tree" in table.stdout and "total" in table.stdout

    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", "--data", str(tmp_path / "missing")])
    error = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert exit_info.value.code == 2 and "error: --data" in error and "no such file or folder" in error


def test_digits_are_never_mirrored_in_augmentation():
    import torch

    from edgeprune.data import BatchLoader, load_data

    data = load_data("digits", image_size=16, val_fraction=0.1)
    assert data.hflip is False
    # An asymmetric image: left half bright. Crops shift it, a flip would put the bright half right.
    images = torch.zeros(64, 3, 16, 16, dtype=torch.uint8)
    images[:, :, :, :8] = 255
    split = type(data.train)(images=images, labels=torch.zeros(64, dtype=torch.long), paths=None)
    no_flip = BatchLoader(split, 64, mean=(0, 0, 0), std=(1, 1, 1), train=True, flip=False)
    x, _ = next(iter(no_flip))
    left, right = x[..., :4].mean(dim=(1, 2, 3)), x[..., -4:].mean(dim=(1, 2, 3))
    assert bool((left >= right).all())
    with_flip = BatchLoader(split, 64, mean=(0, 0, 0), std=(1, 1, 1), train=True, flip=True)
    x, _ = next(iter(with_flip))
    assert bool((x[..., :4].mean(dim=(1, 2, 3)) < x[..., -4:].mean(dim=(1, 2, 3))).any())
