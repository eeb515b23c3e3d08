"""The demo's whole path (train, prune, INT8, bench) on digits, with fewer epochs than the demo's
own, and the accuracies it must reach: well above chance is not enough for a demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeprune.runtime.backends import available_backends
from conftest import DEMO_TEST_EPOCHS, DEMO_TEST_FINETUNE_EPOCHS

# The bars (conftest's DEMO_TEST_EPOCHS: the figures measured for seeds 0/1/2 are there) leave
# room for another machine's rounding: 0.85 for each, INT8 within 2 points of the pruned FP32.
MIN_ACCURACY = 0.85
MAX_INT8_DROP_POINTS = 2.0


@pytest.mark.slow
def test_demo_reaches_real_accuracies_and_the_artifacts_really_shrink(demo_run):
    cwd = Path(demo_run["cwd"])
    result = json.loads((cwd / "runs/demo/demo.json").read_text())
    assert (result["epochs"], result["finetune_epochs"], result["seed"]) == (DEMO_TEST_EPOCHS, DEMO_TEST_FINETUNE_EPOCHS, 0)
    rows = {(r["artifact"], r["runtime"]): r for r in result["bench"]}
    assert len(rows) == 2 + 3 * len(available_backends())  # torch-eager x2, each backend x3
    dense = rows[("baseline", "onnxruntime")]
    pruned = rows[("pruned-taylor-50", "onnxruntime")]
    int8 = rows[("pruned-taylor-50-int8.onnx", "onnxruntime")]
    assert pruned["macs"] < 0.6 * dense["macs"]  # channels physically removed
    assert int8["file_bytes"] < 0.35 * pruned["file_bytes"]  # int8 weights, not float32
    accuracy = result["accuracy"]
    assert accuracy == {"baseline": dense["accuracy"], "pruned": pruned["accuracy"], "int8": int8["accuracy"]}
    for name, value in accuracy.items():
        assert value > MIN_ACCURACY, f"{name}: {value:.4f}"
    assert 100.0 * (accuracy["pruned"] - accuracy["int8"]) <= MAX_INT8_DROP_POINTS, accuracy
    # The same model in PyTorch and in ONNX Runtime scores the same.
    assert abs(rows[("pruned-taylor-50", "torch-eager")]["accuracy"] - pruned["accuracy"]) < 0.005
    assert result["warnings"] == [] and 1 <= result["kept_epoch"] <= DEMO_TEST_EPOCHS
    for row in rows.values():
        assert row["b1_median_ms"] > 0 and row["device"] and row["threads"] == 1
    # the station's replay folder: 20 test images of each of the 10 digits
    assert len(list((cwd / result["replay"]).glob("*/*.png"))) == 200


def test_demo_replay_folder_is_written_once_kept_when_identical_and_never_replaced(tmp_path):
    import numpy as np
    import pytest
    from PIL import Image

    from edgeprune.data import load_data
    from edgeprune.errors import EdgepruneError
    from edgeprune.workflows.demo import (
        DATA_SEED, REPLAY_PER_CLASS, _replay_images, _replay_present, _write_replay,
    )

    data = load_data("digits", image_size=32, val_fraction=0.1, seed=DATA_SEED)
    images = _replay_images(data)
    folder = tmp_path / "replay"
    assert not _replay_present(folder, images)
    _write_replay(folder, images)
    classes = sorted(p.name for p in folder.iterdir())
    assert classes == sorted(data.class_names)
    assert all(len(list((folder / c).glob("*.png"))) == REPLAY_PER_CLASS for c in classes)
    name, pixels = next(iter(images.items()))
    with Image.open(folder / name) as image:  # the test image itself, as the station will read it
        assert image.size == (32, 32) and np.array_equal(np.asarray(image.convert("RGB")), pixels)
    assert _replay_present(folder, images)  # a second demo keeps it

    (folder / name).write_bytes(b"someone else's file")
    with pytest.raises(EdgepruneError, match="holds other files"):
        _replay_present(folder, images)
    assert (folder / name).read_bytes() == b"someone else's file"  # refused, not replaced
