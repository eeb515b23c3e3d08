"""No test-set leak through the split: a checkpoint records how its data was split, every command
defaults to that split, and another split of the same data is refused (or flagged)."""

from __future__ import annotations

import json

import pytest

from edgeprune.data import DataOptions, SplitRecord, check_same_split, load_data
from edgeprune.errors import EdgepruneError
from edgeprune.train import TrainRecipe
from edgeprune.workflows import train_baseline

QUICK = ["--max-per-class", "30", "--threads", "1", "--device", "cpu"]


def _cli(argv):
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


@pytest.fixture(scope="module")
def seed3_checkpoint(tmp_path_factory):
    """Trained on digits split with seed 3 (not the default 0)."""
    data = load_data("digits", image_size=16, max_per_class=30, seed=3)
    out = tmp_path_factory.mktemp("split") / "seed3"
    train_baseline(data, arch="mobilenet_v2", recipe=TrainRecipe(epochs=1, batch_size=32, seed=3),
                   out=out, progress=False)
    return out


def test_the_checkpoint_records_its_split(seed3_checkpoint):
    manifest = json.loads((seed3_checkpoint / "model.json").read_text())
    split = manifest["split"]
    assert split["seed"] == 3 and split["val_fraction"] == 0.1 and split["test_fraction"] == 0.2
    assert split["max_per_class"] == 30 and split["image_size"] == 16
    assert len(split["fingerprint"]) == 64


def test_evaluate_defaults_to_the_recorded_split(seed3_checkpoint, capsys):
    assert _cli(["evaluate", str(seed3_checkpoint), "--data", "digits", "--json", *QUICK]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["split"]["seed"] == 3 and payload["split_warning"] is None
    # the very images the model was tested on at training time
    expected = load_data("digits", image_size=16, max_per_class=30, seed=3)
    assert payload["n"] == len(expected.test)


@pytest.mark.parametrize("command", ["evaluate", "measure", "export", "prune"])
def test_another_split_of_the_same_data_is_refused(seed3_checkpoint, tmp_path, capsys, command):
    before = {p.name: p.read_bytes() for p in seed3_checkpoint.iterdir()}
    argv = [command, str(seed3_checkpoint), "--data", "digits", "--seed", "0", *QUICK]
    if command in ("prune", "export"):
        argv += ["--out", str(tmp_path / ("out.onnx" if command == "export" else "out"))]
    if command in ("measure", "export"):  # no --device: they run on the CPU
        argv = [a for a in argv if a not in ("--device", "cpu")]
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "another split of this same data" in err and "seed 3 vs 0" in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in seed3_checkpoint.iterdir()} == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.onnx").exists()


def test_allow_other_split_flags_the_figures(seed3_checkpoint, capsys):
    assert _cli(["evaluate", str(seed3_checkpoint), "--data", "digits", "--seed", "0",
                 "--allow-other-split", "--json", *QUICK]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["split"]["seed"] == 0
    assert "OTHER SPLIT" in payload["split_warning"]
    assert "OTHER SPLIT" in captured.err


def test_other_data_is_allowed_and_noted(seed3_checkpoint, tmp_path, capsys):
    """Another data set with the same classes (here: the same digits as image files) cannot leak."""
    import numpy as np
    from PIL import Image

    digits = load_data("digits", image_size=16)
    root = tmp_path / "tree"
    for i in range(200):
        label = digits.class_names[int(digits.test.labels[i % len(digits.test)])]
        (root / label).mkdir(parents=True, exist_ok=True)
        image = digits.test.images[i % len(digits.test)].permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(image)).save(root / label / f"{i}.png")
    assert sorted(p.name for p in root.iterdir()) == sorted(digits.class_names)
    assert _cli(["evaluate", str(seed3_checkpoint), "--data", str(root), "--json",
                 "--threads", "1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "other data" in captured.err and "no train/test leak is possible" in captured.err


def test_check_same_split_rules():
    record = SplitRecord(seed=1, val_fraction=0.1, test_fraction=0.2, max_per_class=None,
                         image_size=32, fingerprint="a" * 64)
    same = dict(record.to_dict())
    assert check_same_split(same, record, allow_other_split=False, what="m") is None
    resized = SplitRecord(**{**same, "image_size": 64})  # same files, same partition
    assert check_same_split(same, resized, allow_other_split=False, what="m") is None
    for change in ({"seed": 2}, {"val_fraction": 0.2}, {"test_fraction": 0.3}, {"max_per_class": 5}):
        other = SplitRecord(**{**same, **change})
        with pytest.raises(EdgepruneError, match="another split"):
            check_same_split(same, other, allow_other_split=False, what="m")
        assert "OTHER SPLIT" in check_same_split(same, other, allow_other_split=True, what="m")
    foreign = SplitRecord(**{**same, "seed": 9, "fingerprint": "b" * 64})
    assert "other data" in check_same_split(same, foreign, allow_other_split=False, what="m")
    assert "records no data split" in check_same_split({}, record, allow_other_split=False, what="m")


def test_fingerprint_is_the_data_not_the_split_or_the_size():
    a = load_data("digits", image_size=16, seed=0).split
    b = load_data(DataOptions(spec="digits", image_size=24, seed=4, val_fraction=0.2)).split
    assert a.fingerprint == b.fingerprint
    assert (a.seed, a.val_fraction) != (b.seed, b.val_fraction)


def test_model_check_data_is_the_one_rule(seed3_checkpoint):
    """`Model.check_data` decides for the API, the CLI and a study: same classes, and another
    split of the training data refused unless allowed."""
    from edgeprune import api
    from edgeprune.models import Model

    model = Model.load(seed3_checkpoint)
    recorded = load_data("digits", image_size=16, max_per_class=30, seed=3)
    assert model.check_data(recorded) is None
    other = load_data("digits", image_size=16, max_per_class=30, seed=4)
    with pytest.raises(EdgepruneError, match="another split"):
        model.check_data(other)
    assert "OTHER SPLIT" in model.check_data(other, allow_other_split=True)
    with pytest.raises(EdgepruneError, match="another split"):
        api.evaluate(model, other)  # the API asks the same rule
    renamed = model.with_meta(class_names=[f"c{i}" for i in range(len(model.class_names))])
    with pytest.raises(EdgepruneError, match="classes differ"):
        renamed.check_data(recorded)
