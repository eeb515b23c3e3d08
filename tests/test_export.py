"""ONNX FP32 / INT8 export: round trips against PyTorch, metadata, accuracy, zeros, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.workflows.export import export_checkpoint, sidecar_path
from edgeprune.export.verify import verify_onnx
from edgeprune.models import CheckpointMeta, create_model, load_checkpoint, save_checkpoint
from edgeprune.runtime import Classifier, read_metadata
from edgeprune.runtime import metadata as md


@pytest.fixture(scope="module")
def digits():
    from edgeprune.data import load_data

    return load_data("digits", image_size=32)


def _meta(data, arch="mobilenet_v2") -> CheckpointMeta:
    return CheckpointMeta(arch, list(data.class_names), 32, list(data.mean), list(data.std),
                          training={"seed": 0})


def _zero_smallest(model: nn.Module, sparsity: float) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                k = int(w.numel() * sparsity)
                if k:
                    w[w.abs() <= w.abs().flatten().kthvalue(k).values] = 0.0


@pytest.fixture(scope="module")
def mobilenet_checkpoints(digits, tmp_path_factory):
    """An unpruned and a channel-pruned MobileNetV2 (random init), saved as checkpoints."""
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    dense = create_model("mobilenet_v2", 10).eval()
    save_checkpoint(dense, _meta(digits), root / "dense")
    slim = create_model("mobilenet_v2", 10).eval()
    slim.load_state_dict(dense.state_dict())
    pruner = tp.pruner.MagnitudePruner(
        slim, torch.randn(1, 3, 32, 32), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5, ignored_layers=[slim.classifier[1]],
    )
    pruner.step()
    save_checkpoint(slim.eval(), _meta(digits), root / "slim")
    return root / "dense", root / "slim"


@pytest.fixture(scope="module")
def dense_onnx(mobilenet_checkpoints, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "dense.onnx"
    return export_checkpoint(mobilenet_checkpoints[0], "onnx", out, data=digits, max_verify_images=200)


@pytest.mark.parametrize("which", ["dense", "slim"])
def test_fp32_onnx_round_trip_matches_pytorch(which, mobilenet_checkpoints, dense_onnx, digits, tmp_path):
    ckpt = mobilenet_checkpoints[0 if which == "dense" else 1]
    if which == "dense":
        result = dense_onnx
    else:
        result = export_checkpoint(ckpt, "onnx", tmp_path / "slim.onnx", data=digits, max_verify_images=200)
    out = result.path
    report = result.verification
    assert report.real_images and report.n_images == 200
    assert report.top1_agreement >= 0.999 and report.max_abs_diff < 1e-3

    model, meta = load_checkpoint(ckpt)
    clf = Classifier(out, threads=1)
    for batch in (1, 7):  # dynamic batch: sizes other than the export example
        x = torch.randn(batch, 3, 32, 32)
        with torch.inference_mode():
            expected = model(x).numpy()
        np.testing.assert_allclose(clf.predict(x.numpy()), expected, atol=1e-4, rtol=1e-4)

    # The slim model is physically smaller in the file, not just zero-filled.
    if which == "slim":
        assert out.stat().st_size < 0.5 * dense_onnx.path.stat().st_size

    meta_onnx = read_metadata(out)
    assert meta_onnx.class_names == list(digits.class_names)
    assert meta_onnx.input_size == 32 and meta_onnx.layout == "NCHW"
    assert meta_onnx.mean == pytest.approx(list(meta.mean)) and meta_onnx.std == pytest.approx(list(meta.std))
    assert meta_onnx.architecture == "mobilenet_v2" and meta_onnx.format == "onnx"
    assert meta_onnx.macs and meta_onnx.macs > 0
    assert meta_onnx.raw[md.SOURCE_CHECKPOINT] == str(ckpt)
    assert meta_onnx.raw[md.TEST_ACCURACY] == pytest.approx(report.artifact_accuracy)
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["verification"]["passed"] and sidecar["verification"]["n_images"] == 200


def test_verification_catches_a_wrong_artifact(dense_onnx, digits):
    out = dense_onnx.path
    other = create_model("mobilenet_v2", 10).eval()  # different random weights
    with torch.no_grad():
        other.classifier[1].bias.copy_(torch.arange(10.0))  # predicts class 9 everywhere
    report = verify_onnx(out, other, digits.test.images.numpy()[:100], min_agreement=0.999)
    assert not report.passed and report.max_abs_diff > 1.0


@pytest.fixture(scope="module")
def trained_resnet(digits, tmp_path_factory):
    """ResNet-18 trained 4 epochs on digits (~90% test accuracy, ~30 s on one core)."""
    from edgeprune.train import TrainRecipe
    from edgeprune.workflows import train_baseline

    root = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    model, meta, _ = train_baseline(
        digits, arch="resnet18", recipe=TrainRecipe(epochs=4, batch_size=64, seed=0),
        out=root / "dense", progress=False,
    )
    pruned, _ = load_checkpoint(root / "dense")
    _zero_smallest(pruned, 0.5)
    save_checkpoint(pruned, meta, root / "l1-50")
    return root / "dense", root / "l1-50"


@pytest.mark.slow
def test_int8_accuracy_within_a_few_points_and_zeros_kept(trained_resnet, digits, tmp_path):
    dense_ckpt, pruned_ckpt = trained_resnet
    result = export_checkpoint(dense_ckpt, "onnx-int8", tmp_path / "dense-int8.onnx", data=digits,
                               calibration_images=300)
    report = result.verification
    assert report.real_images and report.n_images == len(digits.test.labels)
    assert report.reference_accuracy > 0.6, "the FP32 model did not train: the test proves nothing"
    assert abs(report.artifact_accuracy - report.reference_accuracy) <= 0.03
    meta = read_metadata(result.path)
    assert meta.format == "onnx-int8"
    assert meta.test_accuracy == pytest.approx(report.artifact_accuracy)
    assert meta.raw[md.CALIBRATION]["images"] == 300
    fp32_bytes = (dense_ckpt / "model.safetensors").stat().st_size
    assert result.path.stat().st_size < 0.3 * fp32_bytes  # INT8 weights: ~4x smaller than FP32

    pruned = export_checkpoint(pruned_ckpt, "onnx-int8", tmp_path / "l1-int8.onnx", data=digits,
                               calibration_images=100)
    sparsity = pruned.info["int8"]
    assert sparsity["zeros_kept"] and sparsity["tensors_matched"] > 0
    assert sparsity["fp32_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert sparsity["int8_sparsity"] >= sparsity["fp32_sparsity"]
    assert read_metadata(pruned.path).raw[md.WEIGHT_SPARSITY_INT8] == pytest.approx(sparsity["int8_sparsity"])
    side = json.loads(sidecar_path(pruned.path).read_text())
    assert side["int8"]["zeros_kept"] is True and side["calibration"]["images"] == 100


def _cli(args: list[str]) -> int:
    import edgeprune.cli.commands_export  # noqa: F401 - registers export/bench on the app
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(EdgepruneError, match="checkpoint not found"):
        export_checkpoint(tmp_path / "nope", "onnx", tmp_path / "x.onnx")
    assert _cli(["export", str(tmp_path / "nope"), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_int8_without_calibration_data_is_a_clear_error(mobilenet_checkpoints, tmp_path, capsys):
    with pytest.raises(EdgepruneError, match="quantizing needs calibration data: pass --data"):
        export_checkpoint(mobilenet_checkpoints[0], "onnx-int8", tmp_path / "q.onnx")
    code = _cli(["export", str(mobilenet_checkpoints[0]), "--format", "onnx-int8",
                 "--out", str(tmp_path / "q.onnx")])
    assert code == 2
    assert "quantizing needs calibration data: pass --data" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(EdgepruneError, match="unknown export format"):
        export_checkpoint(mobilenet_checkpoints[0], "tflite", tmp_path / "q.tflite")
