"""Sparse storage: exact restore, size falling with sparsity, the architecture rebuilt, and the
export workflow's sparse artifact (verified, reported, named without paths)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.export.sparse import (
    load_sparse,
    read_sparse_arrays,
    save_sparse,
    write_sparse_arrays,
)
from edgeprune.metrics import weight_file_sizes
from edgeprune.models import CheckpointMeta, create_model

CLASSES = [str(i) for i in range(10)]


def _meta() -> CheckpointMeta:
    return CheckpointMeta("mobilenet_v2", CLASSES, 32, [0.49, 0.48, 0.45], [0.2, 0.2, 0.2])


def _zero_smallest(model: nn.Module, sparsity: float) -> None:
    """Global magnitude zeroing of Conv2d/Linear weights (what L1Unstructured + make-permanent does)."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        scores = torch.cat([w.abs().flatten() for w in weights])
        threshold = scores.kthvalue(int(scores.numel() * sparsity)).values
        for w in weights:
            w[w.abs() <= threshold] = 0.0


def _same_bits(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
        and sa[k].numpy().tobytes() == sb[k].numpy().tobytes()
        for k in sa
    )


@pytest.fixture(scope="module")
def dense_model() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", 10).eval()
    # Non-trivial BatchNorm statistics, so buffers are checked too.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _pruned_copy(dense: nn.Module, sparsity: float) -> nn.Module:
    model = create_model("mobilenet_v2", 10).eval()
    model.load_state_dict(dense.state_dict())
    _zero_smallest(model, sparsity)
    return model


def test_sparse_restores_bit_identical_and_shrinks_with_sparsity(dense_model, tmp_path):
    _, dense_gzip = weight_file_sizes(dense_model)
    sizes = {}
    for sparsity in (0.5, 0.9):
        model = _pruned_copy(dense_model, sparsity)
        path = save_sparse(model, _meta(), tmp_path / f"m{sparsity}.epsparse")
        restored, meta = load_sparse(path)
        assert _same_bits(model, restored), "restored tensors differ from the saved ones"
        assert meta.class_names == CLASSES and meta.input_size == 32
        x = torch.randn(4, 3, 32, 32)
        with torch.inference_mode():
            assert torch.equal(model(x), restored(x))
        sizes[sparsity] = path.stat().st_size
        if sparsity == 0.9:
            _, pruned_gzip = weight_file_sizes(model)
            # Smaller than gzip of the same zero-filled dense file, and <= 25% of the dense model's.
            assert sizes[0.9] < pruned_gzip
            assert sizes[0.9] <= 0.25 * dense_gzip, (sizes[0.9], dense_gzip)
    assert sizes[0.9] < 0.6 * sizes[0.5], sizes


def test_sparse_rebuilds_channel_pruned_architecture(dense_model, tmp_path):
    model = create_model("mobilenet_v2", 10).eval()
    model.load_state_dict(dense_model.state_dict())
    example = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5, ignored_layers=[model.classifier[1]],
    )
    pruner.step()
    _zero_smallest(model, 0.3)  # structured and unstructured at once
    path = save_sparse(model.eval(), _meta(), tmp_path / "slim.epsparse")
    restored, _ = load_sparse(path)
    assert restored.features[1].conv[0][0].out_channels == model.features[1].conv[0][0].out_channels
    assert restored.features[1].conv[0][0].out_channels < 32
    assert _same_bits(model, restored)


def test_negative_zero_and_odd_dtypes_round_trip(tmp_path):
    weight = torch.randn(40, 40)
    weight[weight.abs() < 1.0] = 0.0
    weight[0, :5] = -0.0
    arrays = {
        "w": weight.numpy(),
        "sparse_no_negzero": torch.where(torch.rand(30, 30) < 0.9, 0.0, 1.5).numpy(),
        "count": torch.tensor(7, dtype=torch.int64).numpy(),
        "half": torch.randn(8, 8).half().numpy(),
    }
    path = write_sparse_arrays(tmp_path / "t.epsparse", arrays, {"format": "test"})
    header, restored = read_sparse_arrays(path)
    for name, array in arrays.items():
        assert restored[name].dtype == array.dtype and restored[name].shape == array.shape
        assert restored[name].tobytes() == array.tobytes(), name
    encodings = {e["name"]: e["encoding"] for e in header["tensors"]}
    assert encodings["w"] == "dense"  # -0.0 present: a bitmask would turn it into +0.0
    assert encodings["sparse_no_negzero"] == "bitmask"


def test_corrupt_or_foreign_sparse_file_is_a_clear_error(tmp_path):
    not_sparse = tmp_path / "x.epsparse"
    not_sparse.write_bytes(b"hello world")
    with pytest.raises(EdgepruneError, match="not an edgeprune sparse file"):
        read_sparse_arrays(not_sparse)
    with pytest.raises(EdgepruneError, match="not found"):
        load_sparse(tmp_path / "missing.epsparse")
    good = write_sparse_arrays(tmp_path / "g.epsparse", {"w": torch.randn(10, 10).numpy()}, {})
    data = bytearray(good.read_bytes())
    data[40] ^= 0xFF
    good.write_bytes(bytes(data))
    with pytest.raises(EdgepruneError, match="corrupt"):
        read_sparse_arrays(good)


def test_sparse_export_through_the_workflow(trained_digits_checkpoint, tmp_path):
    from edgeprune.data import load_data
    from edgeprune.models import load_checkpoint, save_checkpoint
    from edgeprune.workflows.export import export_checkpoint, sidecar_path

    # A pruned-looking checkpoint whose pruning record names its source by absolute path.
    model, meta = load_checkpoint(trained_digits_checkpoint)
    _zero_smallest(model, 0.7)
    ckpt = save_checkpoint(model, dataclasses.replace(
        meta, pruning={"source_checkpoint": str(trained_digits_checkpoint.resolve())}), tmp_path / "l1-70")

    digits = load_data("digits", image_size=32)
    out = tmp_path / "out" / "model.epsparse"
    result = export_checkpoint(ckpt, out, "sparse", data=digits, max_verify_images=100)
    report = result.verification
    assert report.passed and report.weights_identical and report.real_images and report.n_images == 100
    assert report.top1_agreement == 1.0 and report.max_abs_diff == 0.0

    restored, restored_meta = load_sparse(out)
    assert _same_bits(model, restored), "the sparse artifact does not restore the checkpoint's weights"
    assert restored_meta.class_names == list(digits.class_names)
    assert result.info["sparse"]["density"] == pytest.approx(0.3, abs=0.05)
    assert result.info["fraction_of_dense_gzip"] < 1.0  # beats gzip of the same zero-filled weights

    side = json.loads(sidecar_path(out).read_text())
    assert result.report_path == sidecar_path(out) and side["format"] == "sparse"
    assert side["verification"]["passed"] and side["verification"]["weights_identical"]
    assert side["passed"] and not side["rejected"] and side["verified_on"] == "real test images"
    sha = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert side["source_checkpoint"] == "l1-70" and side["source_checkpoint_sha256"] == sha
    header, _ = read_sparse_arrays(out)
    assert header["source"] == {"checkpoint": "l1-70", "sha256": sha}
    assert header["manifest"]["pruning"]["source_checkpoint"] == trained_digits_checkpoint.name
    for text in (json.dumps(header), json.dumps(side)):
        assert str(tmp_path) not in text and str(trained_digits_checkpoint.parent) not in text
