"""Model zoo and the pickle-free checkpoint format."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch_pruning as tp

from edgeprune.errors import EdgepruneError
from edgeprune.models import CheckpointMeta, create_model, load_checkpoint, save_checkpoint


def _meta(arch: str = "mobilenet_v2", n: int = 10) -> CheckpointMeta:
    return CheckpointMeta(arch, [f"c{i}" for i in range(n)], 32, [0.5] * 3, [0.25] * 3)


def _inputs(data, split: str, n: int) -> torch.Tensor:
    from edgeprune.runtime.preprocess import normalize

    images = getattr(data, split).images.numpy()[:n]
    return torch.from_numpy(normalize(images, data.mean, data.std))


@pytest.fixture(scope="module")
def digit_inputs(digits32) -> torch.Tensor:
    """Normalised real test images: the trained model's logits on them are a few units wide."""
    return _inputs(digits32, "test", 16)


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model.eval()(x)
    # An untrained MobileNetV2 gives ~1e-9 here, equal for any two models: compare nothing then.
    assert out.std() > 0.5, f"logits std {out.std():.3g}: comparing them proves nothing"
    return out


@pytest.mark.parametrize("arch,head", [("mobilenet_v2", "classifier.1"), ("resnet18", "fc"), ("vgg16", "classifier.6")])
def test_head_is_replaced_for_the_number_of_classes(arch, head):
    model = create_model(arch, 7)
    assert model.get_submodule(head).out_features == 7


def test_checkpoint_round_trip_gives_the_same_logits(tmp_path, trained_digits_checkpoint, digit_inputs):
    model, trained_meta = load_checkpoint(trained_digits_checkpoint)
    save_checkpoint(model, _meta(), tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.json", "model.safetensors"]
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta.class_names == _meta().class_names
    assert torch.equal(_logits(model, digit_inputs), _logits(loaded, digit_inputs))
    # ... and a different model does not pass the same comparison.
    torch.manual_seed(0)
    other = create_model("mobilenet_v2", 10)
    with torch.no_grad():
        other.classifier[1].bias.copy_(torch.arange(10.0))
    assert not torch.allclose(_logits(other, digit_inputs), _logits(loaded, digit_inputs), atol=1e-3)


def test_physically_pruned_model_rebuilds_from_its_manifest(tmp_path, trained_digits_checkpoint, digits32,
                                                            digit_inputs):
    from edgeprune.pruning.batchnorm import recalibrate_batchnorm

    model, _ = load_checkpoint(trained_digits_checkpoint)
    x = digit_inputs
    pruner = tp.pruner.MagnitudePruner(
        model, x[:2], importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
        ignored_layers=[model.classifier[1]], round_to=8,
    )
    pruner.step()
    # Batch norms re-estimated: halving the channels otherwise shrinks the logits to ~0.1.
    recalibrate_batchnorm(model, _inputs(digits32, "train", 512).split(128))
    save_checkpoint(model, _meta(), tmp_path / "pruned")
    manifest = json.loads((tmp_path / "pruned" / "model.json").read_text())
    assert manifest["layers"]["features.1.conv.0.0"]["out_channels"] < 32
    loaded, _ = load_checkpoint(tmp_path / "pruned")
    assert torch.allclose(_logits(model, x), _logits(loaded, x), atol=1e-6)
    # Loading must not need the pickle module at all: the manifest is JSON, the weights safetensors.
    assert (tmp_path / "pruned" / "model.safetensors").stat().st_size < 0.4 * 4 * 2_236_682


def test_manifest_that_disagrees_with_the_weights_is_a_clear_error(tmp_path):
    save_checkpoint(create_model("mobilenet_v2", 10), _meta(), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "model.json"
    manifest = json.loads(path.read_text())
    manifest["shapes"]["classifier.1.weight"] = [5, 1280]
    path.write_text(json.dumps(manifest))
    with pytest.raises(EdgepruneError, match="do not match"):
        load_checkpoint(tmp_path / "ckpt")


def test_missing_checkpoint_and_non_checkpoint_folder_are_clear_errors(tmp_path):
    with pytest.raises(EdgepruneError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgepruneError, match="model.json is missing"):
        load_checkpoint(tmp_path / "empty")


def test_saving_a_masked_model_is_refused(tmp_path):
    model = create_model("mobilenet_v2", 10)
    from torch.nn.utils import prune

    prune.l1_unstructured(model.classifier[1], "weight", amount=0.5)
    with pytest.raises(EdgepruneError, match="masks"):
        save_checkpoint(model, _meta(), tmp_path / "masked")


def test_unknown_architecture_and_too_few_classes(tmp_path):
    with pytest.raises(EdgepruneError, match="unknown model"):
        create_model("alexnet", 10)
    with pytest.raises(EdgepruneError, match="at least 2 classes"):
        create_model("mobilenet_v2", 1)


def test_imagenet_weights_missing_from_hub_cache_says_which_file_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(EdgepruneError, match=r"mobilenet_v2-b0353104\.pth.*hub[/\\]checkpoints"):
        create_model("mobilenet_v2", 10, "imagenet")


def test_imagenet_v1_from_hub_cache_is_used_when_default_is_absent(tmp_path, monkeypatch, shared_weights):
    source = shared_weights / "mobilenet_v2-b0353104.pth"
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.symlink(source, cache / source.name)  # a temporary hub cache, no copy of the shared file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    notes: list[str] = []
    model = create_model("mobilenet_v2", 10, "imagenet", log=notes.append)
    assert any("IMAGENET1K_V1" in n for n in notes)
    reference = torch.load(source, map_location="cpu", weights_only=True)
    assert torch.equal(model.features[0][0].weight, reference["features.0.0.weight"])
    assert model.classifier[1].out_features == 10


def test_weights_from_a_state_dict_path(tmp_path):
    model = create_model("resnet18", 4)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = create_model("resnet18", 4, str(tmp_path / "w.pth"))
    assert torch.equal(again.fc.weight, model.fc.weight)
    with pytest.raises(EdgepruneError, match="do not fit"):
        create_model("resnet18", 5, str(tmp_path / "w.pth"))


def test_an_imagenet_weights_path_loads_its_body_under_a_new_head(shared_weights):
    """The configs name ../shared/weights/mobilenet_v2-b0353104.pth (1000 classes) for a 10-class
    task: the body must load bit for bit and the head must be new, not refused."""
    source = shared_weights / "mobilenet_v2-b0353104.pth"
    notes: list[str] = []
    model = create_model("mobilenet_v2", 10, str(source), log=notes.append)
    reference = torch.load(source, map_location="cpu", weights_only=True)
    assert torch.equal(model.features[5].conv[1][0].weight, reference["features.5.conv.1.0.weight"])
    assert model.classifier[1].out_features == 10
    assert any("1000-class ImageNet head is replaced" in n for n in notes)
