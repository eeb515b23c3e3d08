"""torchvision architectures with the head replaced for the dataset's classes.

ImageNet weights come from torchvision's weight enums through the torch hub cache
(`$TORCH_HOME/hub/checkpoints`), so they work offline whenever the file is there; nothing is
downloaded unless the caller asks for it explicitly (`allow_download=True`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class Architecture:
    builder: Callable[..., nn.Module]
    weights_enum: type
    head_path: str  # dotted path of the final Linear layer that is replaced for the new classes


ARCHITECTURES: dict[str, Architecture] = {
    "mobilenet_v2": Architecture(tvm.mobilenet_v2, tvm.MobileNet_V2_Weights, "classifier.1"),
    "resnet18": Architecture(tvm.resnet18, tvm.ResNet18_Weights, "fc"),
    "vgg16": Architecture(tvm.vgg16, tvm.VGG16_Weights, "classifier.6"),
}


def _architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise EdgepruneError(
            f"unknown model {name!r}: choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _cached_file(weights) -> Path:
    return hub_checkpoint_dir() / Path(urlparse(weights.url).path).name


def resolve_imagenet_weights(arch: str, allow_download: bool = False):
    """The torchvision weight enum to use, preferring DEFAULT but falling back to any cached variant.

    Returns (weights, note) where note explains a fallback, or raises with the file to place where.
    """
    enum = _architecture(arch).weights_enum
    default = enum.DEFAULT
    if allow_download or _cached_file(default).is_file():
        return default, None
    for variant in enum:
        if _cached_file(variant).is_file():
            return variant, (
                f"{enum.__name__}.{default.name} is not in the hub cache; using the cached "
                f"{enum.__name__}.{variant.name} ({_cached_file(variant).name}) instead"
            )
    wanted = ", ".join(_cached_file(v).name for v in enum)
    raise EdgepruneError(
        f"ImageNet weights for {arch} are not in the torch hub cache and this run does not "
        f"download. Place one of [{wanted}] in {hub_checkpoint_dir()} (set TORCH_HOME to choose "
        f"the cache folder; the hub cache is $TORCH_HOME/hub/checkpoints)."
    )


def get_submodule_parent(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_path, _, leaf = dotted.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, leaf


def classifier_head(model: nn.Module, arch: str) -> nn.Linear:
    return model.get_submodule(_architecture(arch).head_path)


def _replace_head(model: nn.Module, arch: str, num_classes: int) -> None:
    head_path = _architecture(arch).head_path
    parent, leaf = get_submodule_parent(model, head_path)
    old = getattr(parent, leaf)
    setattr(parent, leaf, nn.Linear(old.in_features, num_classes))


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file, an edgeprune checkpoint folder, or a .pth state_dict.

    .pth files are read with `weights_only=True`: tensors only, never arbitrary pickled objects.
    """
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise EdgepruneError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a plain state_dict"
        raise EdgepruneError(f"{path} is not a readable tensor-only state_dict: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgepruneError(f"{path} does not hold a state_dict of tensors")
    return state


def create_model(
    arch: str,
    num_classes: int,
    weights: str = "none",
    *,
    width_mult: float = 1.0,
    allow_download: bool = False,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Build `arch` with a new `num_classes` head.

    weights: `none` (random init), `imagenet` (torchvision enum from the hub cache; the head is
    re-initialised), or a PATH to a state_dict for the full model with this head size.
    """
    spec = _architecture(arch)
    if num_classes < 2:
        raise EdgepruneError(f"a classifier needs at least 2 classes, got {num_classes}")
    kwargs = {"width_mult": width_mult} if arch == "mobilenet_v2" else {}
    if width_mult != 1.0 and arch != "mobilenet_v2":
        raise EdgepruneError(f"--width-mult applies to mobilenet_v2 only, not {arch}")

    if weights == "none":
        model = spec.builder(weights=None, num_classes=num_classes, **kwargs)
        return model
    if weights == "imagenet":
        if width_mult != 1.0:
            raise EdgepruneError("ImageNet weights exist only for width multiplier 1.0")
        enum_value, note = resolve_imagenet_weights(arch, allow_download)
        if note and log:
            log(note)
        model = spec.builder(weights=None)
        state = enum_value.get_state_dict(progress=False, check_hash=False)
        model.load_state_dict(state)
        _replace_head(model, arch, num_classes)
        return model
    path = Path(os.path.expanduser(weights))
    state = _load_weights_file(path)
    model = spec.builder(weights=None, num_classes=num_classes, **kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise EdgepruneError(
            f"weights in {path} do not fit {arch} with {num_classes} classes: {str(exc)[:500]}"
        ) from None
    return model
