"""edgeprune.metrics, edgeprune.export.export_onnx and `edgeprune measure`, on small models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.export import export_onnx
from edgeprune.workflows import measure
from edgeprune.metrics import (
    MACS_COUNTER,
    count_macs,
    count_macs_nonzero,
    count_params,
    energy_used_uj,
    find_rapl_zones,
    latency_onnxruntime,
    latency_torch,
    read_energy,
    weight_file_sizes,
)
from edgeprune.models import CheckpointMeta, save_checkpoint
from edgeprune.runtime.sessions import ort_session

REQUIRED_KEYS = {
    "params", "nonzero_params", "sparsity", "weight_sparsity", "macs", "macs_counter",
    "size_bytes", "size_gzip_bytes", "latency_ms", "peak_memory_bytes", "peak_memory_note",
    "accuracy", "energy_mj_per_image", "energy_note", "device", "threads", "software",
    "input_size", "timing",
}


class ConvBnLinear(nn.Module):
    """conv(3->4, 3x3, bias) 108+4, BN(4) 4+4, linear(4->2) 8+2: 130 parameters, 116 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


class PrunedLikeNet(nn.Module):
    """torchvision-like blocks with the odd channel counts a channel-pruned model has."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 13, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(13), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(13, 13, 3, padding=1, groups=13, bias=False), nn.BatchNorm2d(13))
        self.expand = nn.Conv2d(13, 7, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.depthwise(x))
        return self.head(torch.flatten(self.pool(self.expand(x)), 1))


def calibrated_eval(model: nn.Module, input_size: int) -> nn.Module:
    """Set BatchNorm statistics from random data so an untrained model's outputs are O(0.1),
    not ~1e-11 (which would make any output comparison pass)."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, input_size, input_size))
    return model.eval()


def test_count_params_with_known_zeros() -> None:
    model = ConvBnLinear()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
        model.conv.weight.view(-1)[:30] = 0
        model.fc.weight.view(-1)[:3] = 0
        model.conv.bias[0] = 0
        model.bn.bias[:2] = 0
    counts = count_params(model)
    assert counts["params"] == 130
    assert counts["nonzero_params"] == 130 - 36
    assert counts["sparsity"] == pytest.approx(36 / 130)
    assert counts["prunable_weights"] == 116
    assert counts["nonzero_prunable_weights"] == 116 - 33
    assert counts["weight_sparsity"] == pytest.approx(33 / 116)


def test_gzip_size_shrinks_when_half_the_weights_are_zero() -> None:
    torch.manual_seed(0)
    model = nn.Linear(256, 256, bias=False)
    raw_dense, gzip_dense = weight_file_sizes(model)
    with torch.no_grad():
        model.weight[:128] = 0
    raw_half, gzip_half = weight_file_sizes(model)
    assert raw_half == raw_dense > 256 * 256 * 4
    assert gzip_half < 0.65 * gzip_dense
    assert weight_file_sizes(model) == (raw_half, gzip_half)  # reproducible


def test_macs_of_a_single_conv_match_the_formula() -> None:
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
    macs, counter = count_macs(conv, 16)
    out_pixels = 8 * 8
    assert macs == 8 * 3 * 3 * 3 * out_pixels
    assert counter == MACS_COUNTER
    assert count_macs_nonzero(conv, 16) == macs
    with torch.no_grad():
        conv.weight.view(-1)[:10] = 0
    assert count_macs_nonzero(conv, 16) == macs - 10 * out_pixels


def _assert_latency_structure(latency: dict, batch_sizes: tuple[int, ...]) -> None:
    assert set(latency) == {f"batch{b}" for b in batch_sizes}
    for stats in latency.values():
        assert set(stats) == {"median", "p90"}
        assert 0 < stats["median"] <= stats["p90"]


def test_latency_structure_for_both_runtimes(tmp_path: Path) -> None:
    model = PrunedLikeNet().eval()
    threads_before = torch.get_num_threads()
    torch_latency = latency_torch(model, input_size=16, batch_sizes=(1, 4), threads=1, warmup=1, runs=3)
    _assert_latency_structure(torch_latency, (1, 4))
    assert torch.get_num_threads() == threads_before
    onnx_path = export_onnx(model, tmp_path / "tiny.onnx", input_size=16)
    ort_latency = latency_onnxruntime(onnx_path, input_size=16, batch_sizes=(1, 4), threads=1, warmup=1, runs=3)
    _assert_latency_structure(ort_latency, (1, 4))
    with pytest.raises(EdgepruneError):
        latency_torch(model.train(), input_size=16, runs=1)


def _assert_round_trip(
    model: nn.Module, onnx_path: Path, input_size: int, inputs: np.ndarray | None = None,
    min_std: float = 0.0, atol: float = 1e-4,
) -> None:
    """ONNX Runtime and PyTorch agree on batches of 1 and 3 (`inputs`, else random)."""
    session = ort_session(onnx_path)
    for batch in (1, 3):
        x = torch.randn(batch, 3, input_size, input_size) if inputs is None else torch.from_numpy(inputs[:batch])
        with torch.inference_mode():
            expected = model(x).numpy()
        (got,) = session.run(["logits"], {"input": x.numpy()})
        assert got.shape == expected.shape
        assert np.abs(expected).max() > 1e-2
        # Agreement means something only when the logits are not all near zero.
        assert expected.std() > min_std, f"logits std {expected.std():.3g} <= {min_std}"
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def test_onnx_export_round_trip_on_a_pruned_like_model(tmp_path: Path) -> None:
    model = calibrated_eval(PrunedLikeNet(), 16)
    path = export_onnx(model, tmp_path / "m.onnx", input_size=16, metadata={"class_names": '["a"]'})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # self-contained
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert proto.opset_import[0].version >= 17
    assert {p.key: p.value for p in proto.metadata_props} == {"class_names": '["a"]'}
    _assert_round_trip(model, path, 16)
    with pytest.raises(EdgepruneError, match="opset"):
        export_onnx(model, tmp_path / "old.onnx", input_size=16, opset=13)


def test_onnx_export_round_trip_on_mobilenet_v2(tmp_path: Path, trained_digits_checkpoint: Path) -> None:
    """A trained MobileNetV2 (an untrained one outputs near-zero logits that always "agree")."""
    from edgeprune.data import load_data
    from edgeprune.models import load_checkpoint
    from edgeprune.runtime.preprocess import normalize

    model, meta = load_checkpoint(trained_digits_checkpoint)
    digits = load_data("digits", image_size=32)
    images = normalize(digits.test.images.numpy(), meta.mean, meta.std)
    path = export_onnx(model, tmp_path / "mobilenet.onnx", input_size=32)
    # Logits of a few units: 1e-3 is the FP32 ONNX tolerance the export verification uses.
    _assert_round_trip(model, path, 32, inputs=images, min_std=0.5, atol=1e-3)
    _assert_round_trip(model, path, 32, min_std=0.5, atol=1e-3)  # and off the data


def test_measure_tiny_model_reports_everything_and_leaves_the_model_alone() -> None:
    model = PrunedLikeNet().train()
    result = measure(model, input_size=16, batch_sizes=(1, 2), warmup=1, runs=2)
    assert REQUIRED_KEYS <= set(result)
    assert model.training
    assert set(result["latency_ms"]) == {"torch", "onnxruntime", "openvino"}
    assert result["latency_ms"]["openvino"] is None  # not asked for
    for runtime in ("torch", "onnxruntime"):
        _assert_latency_structure(result["latency_ms"][runtime], (1, 2))
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["peak_memory_bytes"] > 0
    assert result["accuracy"] is None
    zones, _ = find_rapl_zones()
    if zones:
        assert result["energy_mj_per_image"] > 0
    else:
        assert result["energy_mj_per_image"] is None
        assert result["energy_note"].startswith("not measured:")
    json.dumps(result)  # JSON-ready


def test_measure_accuracy_is_the_test_split_fraction() -> None:
    from edgeprune.data import load_data

    data = load_data("digits", image_size=16, max_per_class=10)
    always_zero = PrunedLikeNet(num_classes=10).eval()
    with torch.no_grad():
        always_zero.head.weight.zero_()
        always_zero.head.bias.copy_(torch.eye(10)[0])
    result = measure(always_zero, input_size=16, data=data, batch_sizes=(1,), runtimes=("torch",), runs=1)
    assert result["accuracy"] == pytest.approx(float((data.test.labels == 0).float().mean()))
    assert result["accuracy_images"] == len(data.test.labels)
    assert result["latency_ms"]["onnxruntime"] is None and result["peak_memory_bytes"] is None


def test_energy_is_unavailable_here_with_a_reason() -> None:
    zones, note = find_rapl_zones()
    if Path("/sys/class/powercap").is_dir():
        pytest.skip("this machine exposes powercap; the fake-tree test covers reading")
    assert zones == []
    assert "not measured" in note and "/sys/class/powercap" in note


def test_rapl_reading_skips_subzones_and_psys_and_handles_wrap_around(tmp_path: Path) -> None:
    def zone(name: str, label: str, energy: int, max_range: int = 10_000) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "name").write_text(label + "\n")
        (folder / "energy_uj").write_text(f"{energy}\n")
        (folder / "max_energy_range_uj").write_text(f"{max_range}\n")
        return folder

    package = zone("intel-rapl:0", "package-0", 9_000)
    zone("intel-rapl:0:0", "core", 5)
    zone("intel-rapl:1", "psys", 7)
    zones, note = find_rapl_zones(tmp_path)
    assert [z.name for z in zones] == ["intel-rapl:0 (package-0)"]
    assert "package-0" in note
    before = read_energy(zones)
    (package / "energy_uj").write_text("500\n")  # wrapped past 10_000
    assert energy_used_uj(zones, before, read_energy(zones)) == 10_000 - 9_000 + 500


@pytest.fixture(scope="module")
def mobilenet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10)
    meta = CheckpointMeta(
        architecture="mobilenet_v2",
        class_names=[f"c{i}" for i in range(10)],
        input_size=32,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
    )
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("ckpt") / "mobilenet")


@pytest.mark.slow
def test_measure_command_prints_json_with_every_required_key(mobilenet_checkpoint: Path) -> None:
    from typer.testing import CliRunner

    import edgeprune.cli.commands_measure  # noqa: F401 - registers `measure`
    from edgeprune.cli.app import app

    runner = CliRunner()
    done = runner.invoke(app, ["measure", str(mobilenet_checkpoint), "--json", "--runs", "2", "--warmup", "1"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert REQUIRED_KEYS <= set(result)
    assert result["size_bytes"] == (mobilenet_checkpoint / "model.safetensors").stat().st_size
    assert result["threads"] == 1 and result["input_size"] == 32
    assert result["timing"]["runs"] == 2
    for runtime in ("torch", "onnxruntime"):
        assert set(result["latency_ms"][runtime]) == {"batch1", "batch64"}
    assert result["weight_sparsity"] == 0.0

    skipped = runner.invoke(app, ["measure", str(mobilenet_checkpoint), "--json", "--runs", "1", "--no-onnx"])
    assert skipped.exit_code == 0, skipped.output
    result = json.loads(skipped.stdout)
    assert result["latency_ms"]["onnxruntime"] is None
    assert result["peak_memory_bytes"] is None


def test_measure_command_on_a_missing_checkpoint_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeprune.cli import main

    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(SystemExit) as exit_info:
        main(["measure", str(missing), "--json"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "checkpoint not found" in captured.err and str(missing) in captured.err.replace("\n", "")
    assert captured.out == ""
