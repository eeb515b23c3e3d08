"""torchvision architectures with the head replaced for the dataset's classes.

ImageNet weights come from torchvision's weight enums through the torch hub cache
(`$TORCH_HOME/hub/checkpoints`), so they work offline whenever the file is there; nothing is
downloaded unless the caller asks for it explicitly (`allow_download=True`).

Every .pth file, from the hub cache or `--weights PATH`, goes through `load_pth`: its sha256 is
checked against the prefix torchvision puts in the file name (when the name is a torchvision
one), then it is read with `weights_only=True`. torchvision's own `get_state_dict` reads the hub
cache with `weights_only=False`, so a file planted there would run code; it is never called.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import file_sha256
from edgeprune.validation import check_option


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


IMAGENET_CLASSES = 1000


def _architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise EdgepruneError(
            f"unknown model {name!r}: choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _file_name(weights) -> str:
    return Path(urlparse(weights.url).path).name


def _cached_file(weights) -> Path:
    return hub_checkpoint_dir() / _file_name(weights)


# torch.hub's rule (HASH_REGEX, check_hash): `<name>-<hex>.pth` carries the first hex digits of
# the file's sha256.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def torchvision_weight_files() -> dict[str, tuple[str, str]]:
    """File name -> (sha256 prefix, download URL) of every torchvision weights file in the zoo."""
    known = {}
    for spec in ARCHITECTURES.values():
        for variant in spec.weights_enum:
            name = _file_name(variant)
            match = _HASH_IN_NAME.search(name)
            if match:
                known[name] = (match.group(1), variant.url)
    return known


def load_pth(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .pth file, read safely: hash checked (torchvision file names), then
    `torch.load(weights_only=True)`, which refuses any pickled object other than tensors and
    plain containers, so the file cannot run code. Every failure names the file and the fix."""
    if not path.is_file():
        raise EdgepruneError(f"weights file not found: {path}")
    known = torchvision_weight_files().get(path.name)
    fix = (
        f"delete it and place a fresh copy of {known[1]} there" if known
        else "replace it with a state_dict saved by torch.save(model.state_dict(), PATH)"
    )
    if known:
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise EdgepruneError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
        if not actual.startswith(known[0]):
            raise EdgepruneError(
                f"weights file {path} is damaged or not the torchvision file its name claims: its "
                f"sha256 starts {actual[: len(known[0])]}, the name says {known[0]} (a truncated "
                f"download, or another file); {fix}"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False: exactly what must not be done here.
        raise EdgepruneError(
            f"weights file {path} holds pickled objects other than tensors; refused, since loading "
            f"them could run code. {fix[0].upper() + fix[1:]}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, legacy format, EOF, ...: all "unreadable"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgepruneError(
            f"weights file {path} is not a readable PyTorch state_dict (truncated, or another "
            f"format: {reason}); {fix}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgepruneError(f"weights file {path} does not hold a state_dict of tensors; {fix}")
    return state


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


def check_finite(tensors: dict, where: str) -> None:
    """Refuse NaN or infinite values in any floating-point tensor (torch or numpy), naming the
    first such tensor: a diverged model is never saved, loaded or exported as if it worked."""
    for name, tensor in tensors.items():
        t = torch.as_tensor(tensor)
        if not t.is_floating_point() or t.numel() == 0:
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            kind = "NaN" if bool(torch.isnan(t).any()) else "infinite"
            raise EdgepruneError(
                f"{where}: tensor {name} holds {bad:,} {kind} value(s) of {t.numel():,}: the weights "
                "are broken (a diverged training run or a damaged file); retrain, with a lower "
                "learning rate if training diverged"
            )


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file, an edgeprune checkpoint folder, or a .pth state_dict
    (through load_pth: tensors only, never arbitrary pickled objects); finite values only."""
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise EdgepruneError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
            raise EdgepruneError(f"{path} is not a readable safetensors file: {exc}") from None
    else:
        state = load_pth(path)
    check_finite(state, str(path))
    return state


def _load_imagenet(model: nn.Module, weights, allow_download: bool) -> None:
    """torchvision's ImageNet weights from the hub cache, through load_pth (never get_state_dict)."""
    path = _cached_file(weights)
    if not path.is_file() and allow_download:
        prefix = torchvision_weight_files().get(path.name, (None, None))[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # writes a temporary file and renames it only once the hash matches
            torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=prefix, progress=False)
        except Exception as exc:  # noqa: BLE001 - URLError, hash mismatch, disk full, ...
            raise EdgepruneError(f"could not download {weights.url} to {path}: {exc}") from None
    state = load_pth(path)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise EdgepruneError(
            f"weights file {path} does not fit torchvision's {type(model).__name__} "
            f"({_mismatch(model, state)}); delete it and place a fresh copy of {weights.url} there"
        ) from None


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Which keys a state_dict lacks, adds or shapes differently (torch's message runs to pages)."""
    expected = model.state_dict()
    parts = []
    for label, keys in (
        ("missing", [k for k in expected if k not in state]),
        ("unexpected", [k for k in state if k not in expected]),
        ("other shape", [k for k in expected if k in state and state[k].shape != expected[k].shape]),
    ):
        if keys:
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}")
    return "; ".join(parts) or "no tensors"


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
    re-initialised), or a PATH to a state_dict for the full model with this head size (or an
    ImageNet file with its 1000-class head, whose head is replaced like `imagenet`'s).
    """
    spec = _architecture(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise EdgepruneError(f"a classifier needs at least 2 classes, got {num_classes!r}")
    width_mult = check_option("width_mult", width_mult)
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
        _load_imagenet(model, enum_value, allow_download)
        _replace_head(model, arch, num_classes)
        return model
    path = Path(os.path.expanduser(weights))
    state = _load_weights_file(path)
    model = spec.builder(weights=None, num_classes=num_classes, **kwargs)
    head_weight = state.get(f"{spec.head_path}.weight")
    if (num_classes != IMAGENET_CLASSES and head_weight is not None
            and head_weight.shape[0] == IMAGENET_CLASSES):
        # A downloaded ImageNet file (torchvision's own .pth, as in ../shared/weights) is a
        # backbone to transfer: keep its body, give it a new head, as `imagenet` does.
        state = {k: v for k, v in state.items() if not k.startswith(f"{spec.head_path}.")}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(f"{spec.head_path}.")})
        if log:
            log(f"{path.name}: its {IMAGENET_CLASSES}-class ImageNet head is replaced by a new "
                f"{num_classes}-class head (the body is loaded)")
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise EdgepruneError(
            f"weights in {path} do not fit {arch} with {num_classes} classes "
            f"({_mismatch(model, state)})"
        ) from None
    return model
