"""Checkpoints as a folder: `model.safetensors` (tensors) + `model.json` (the shape manifest).

A pruned model's architecture differs from the torchvision one it came from only in the sizes of
its Conv2d / BatchNorm2d / Linear layers, so the manifest records the torchvision architecture plus
every such layer's constructor sizes and every tensor's shape. Loading builds the torchvision
model, re-creates the layers whose sizes differ, and loads the tensors: no pickled objects, so a
checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edgeprune import __version__
from edgeprune.errors import EdgepruneError
from edgeprune.models.zoo import create_model, get_submodule_parent

FORMAT = "edgeprune-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "model.json"


@dataclass
class CheckpointMeta:
    """Everything about a model except its tensors. Extra fields go into `extra`."""

    architecture: str
    class_names: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    width_mult: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    pruning: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)  # edgeprune.data.SplitRecord.to_dict()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def layer_manifest(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Constructor sizes of every Conv2d / BatchNorm2d / Linear layer, by module name."""
    layers: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            layers[name] = {
                "type": "Conv2d",
                "in_channels": module.in_channels,
                "out_channels": module.out_channels,
                "groups": module.groups,
            }
        elif isinstance(module, nn.BatchNorm2d):
            layers[name] = {"type": "BatchNorm2d", "num_features": module.num_features}
        elif isinstance(module, nn.Linear):
            layers[name] = {
                "type": "Linear",
                "in_features": module.in_features,
                "out_features": module.out_features,
            }
    return layers


def _check_no_masks(state: dict[str, torch.Tensor]) -> None:
    masked = [k for k in state if k.endswith("_orig") or k.endswith("_mask")]
    if masked:
        raise EdgepruneError(
            "refusing to save a model with pruning masks still attached "
            f"({masked[0]}, ...): make the pruning permanent first"
        )


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict as saved: detached, on the CPU, contiguous; refuses pruning masks."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _check_no_masks(state)
    return state


def build_manifest(model: nn.Module, meta: CheckpointMeta) -> dict[str, Any]:
    """The `model.json` of `model` with `meta`: what a checkpoint or a sparse file stores beside
    the tensors to rebuild the (possibly pruned) model without pickles."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgeprune_version": __version__,
        **asdict(meta),
        "num_classes": meta.num_classes,
        "layers": layer_manifest(model),
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
    }


def weights_sha256(model: nn.Module) -> str:
    """sha256 of the weights serialised exactly as `save_checkpoint` writes model.safetensors, so
    an in-memory model and its saved checkpoint have the same identity."""
    import hashlib

    from safetensors.torch import save

    return hashlib.sha256(save(cpu_state(model), metadata={"format": FORMAT})).hexdigest()


def save_checkpoint(model: nn.Module, meta: CheckpointMeta, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = cpu_state(model)
    manifest = build_manifest(model, meta)
    # Write the tensors first and the manifest last, each through a temporary name, so an
    # interrupted save never leaves a manifest that points at missing or partial weights.
    tmp_weights = out / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp_weights), metadata={"format": FORMAT})
    tmp_weights.replace(out / WEIGHTS_FILE)
    tmp_manifest = out / (MANIFEST_FILE + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp_manifest.replace(out / MANIFEST_FILE)
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    ckpt = Path(path)
    manifest_path = ckpt / MANIFEST_FILE
    if not ckpt.exists():
        raise EdgepruneError(f"checkpoint not found: {ckpt}")
    if not manifest_path.is_file():
        raise EdgepruneError(
            f"{ckpt} is not an edgeprune checkpoint: {MANIFEST_FILE} is missing "
            f"(a checkpoint is a folder with {WEIGHTS_FILE} and {MANIFEST_FILE})"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EdgepruneError(f"{manifest_path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise EdgepruneError(f"{manifest_path} is not an edgeprune manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise EdgepruneError(
            f"{ckpt} was written by a newer edgeprune (format {manifest['format_version']})"
        )
    return manifest


def meta_from_manifest(manifest: dict[str, Any]) -> CheckpointMeta:
    names = {f.name for f in CheckpointMeta.__dataclass_fields__.values()}
    return CheckpointMeta(**{k: v for k, v in manifest.items() if k in names})


def _rebuild_layer(old: nn.Module, spec: dict[str, Any]) -> nn.Module:
    kind = spec["type"]
    if kind == "Conv2d":
        assert isinstance(old, nn.Conv2d)
        return nn.Conv2d(
            spec["in_channels"],
            spec["out_channels"],
            old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            dilation=old.dilation,
            groups=spec["groups"],
            bias=old.bias is not None,
            padding_mode=old.padding_mode,
        )
    if kind == "BatchNorm2d":
        assert isinstance(old, nn.BatchNorm2d)
        return nn.BatchNorm2d(
            spec["num_features"],
            eps=old.eps,
            momentum=old.momentum,
            affine=old.affine,
            track_running_stats=old.track_running_stats,
        )
    if kind == "Linear":
        assert isinstance(old, nn.Linear)
        return nn.Linear(spec["in_features"], spec["out_features"], bias=old.bias is not None)
    raise EdgepruneError(f"unknown layer type {kind!r} in manifest")


def apply_layer_manifest(model: nn.Module, layers: dict[str, dict[str, Any]]) -> None:
    """Resize the model's layers in place to the sizes recorded in a manifest."""
    current = layer_manifest(model)
    for name, spec in layers.items():
        if name not in current:
            raise EdgepruneError(f"manifest names layer {name!r}, which the architecture lacks")
        if current[name]["type"] != spec.get("type"):
            raise EdgepruneError(
                f"manifest says {name} is a {spec.get('type')}, architecture has {current[name]['type']}"
            )
        if current[name] != spec:
            parent, leaf = get_submodule_parent(model, name)
            setattr(parent, leaf, _rebuild_layer(getattr(parent, leaf), spec))


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild a (possibly pruned) model from its manifest and load its tensors. Returns eval mode."""
    ckpt = Path(path)
    manifest = read_manifest(ckpt)
    meta = meta_from_manifest(manifest)
    weights_path = ckpt / WEIGHTS_FILE
    if not weights_path.is_file():
        raise EdgepruneError(f"{ckpt} has a manifest but no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise EdgepruneError(f"{weights_path} is not a readable safetensors file: {exc}") from None

    shapes = manifest.get("shapes", {})
    for key, tensor in state.items():
        if key not in shapes:
            raise EdgepruneError(f"{weights_path}: tensor {key} is not in the manifest")
        if list(tensor.shape) != list(shapes[key]):
            raise EdgepruneError(
                f"checkpoint shapes do not match its manifest: {key} is "
                f"{list(tensor.shape)} in {WEIGHTS_FILE} but {shapes[key]} in {MANIFEST_FILE}"
            )
    missing = sorted(set(shapes) - set(state))
    if missing:
        raise EdgepruneError(f"{weights_path} lacks tensors the manifest lists: {missing[:3]}")

    model = create_model(meta.architecture, meta.num_classes, "none", width_mult=meta.width_mult)
    apply_layer_manifest(model, manifest.get("layers", {}))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EdgepruneError(
            f"checkpoint shapes do not match its manifest's layers: {str(exc)[:500]}"
        ) from None
    return model.to(device).eval(), meta


def ensure_same_classes(meta: CheckpointMeta, class_names: list[str], data_name: str) -> None:
    """A checkpoint can only be evaluated or fine-tuned on data with the same classes, in order."""
    if list(meta.class_names) != list(class_names):
        only_ckpt = sorted(set(meta.class_names) - set(class_names))
        only_data = sorted(set(class_names) - set(meta.class_names))
        detail = (
            f"only in the checkpoint: {only_ckpt}; only in the data: {only_data}"
            if only_ckpt or only_data
            else "same names, different order"
        )
        raise EdgepruneError(
            f"the checkpoint's classes differ from those of {data_name} ({detail})"
        )
