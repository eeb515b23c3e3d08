"""Checkpoints as a folder: `model.safetensors` (tensors) + `model.json` (the shape manifest).

A pruned model's architecture differs from the torchvision one it came from only in the sizes of
its Conv2d / BatchNorm2d / Linear layers, so the manifest records the torchvision architecture plus
every such layer's constructor sizes and every tensor's shape. Loading builds the torchvision
model, re-creates the layers whose sizes differ, and loads the tensors: no pickled objects, so a
checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edgeprune import __version__
from edgeprune.errors import EdgepruneError
from edgeprune.models.zoo import ARCHITECTURES, check_finite, create_model, get_submodule_parent
from edgeprune.outputs import CHECKPOINT_FORMAT, MANIFEST_FILE, WEIGHTS_FILE, atomic_folder, check_output_folder
from edgeprune.validation import RANGES

FORMAT = CHECKPOINT_FORMAT
FORMAT_VERSION = 1


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
    """The state_dict as saved: detached, on the CPU, contiguous; refuses pruning masks and
    non-finite values."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _check_no_masks(state)
    check_finite(state, "refusing to save the model")
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


def save_checkpoint(
    model: nn.Module, meta: CheckpointMeta, out_dir: str | Path, *, overwrite: bool = False,
    inputs: tuple[str | Path, ...] = (),
) -> Path:
    """Write the checkpoint folder `out_dir` whole or not at all: both files go into a unique
    temporary folder beside it, are fsynced, and the folder is renamed into place (an existing
    checkpoint, only with `overwrite`, is exchanged for it in one step). `inputs`: folders or
    files being read, which are never written into."""
    out = check_output_folder(out_dir, inputs=inputs, overwrite=overwrite, what="checkpoint folder")
    state = cpu_state(model)
    manifest = build_manifest(model, meta)
    with atomic_folder(out, overwrite=overwrite, what="checkpoint folder") as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------- reading manifests
# A manifest is checked field by field before anything is built from it: a hand-edited or damaged
# model.json must give an error naming the field, not a TypeError deep inside torch (or a layer of
# 10^9 channels allocated before the weights are compared).

MAX_INPUT_SIZE = int(RANGES["input_size"].hi)
MAX_WIDTH_MULT = float(RANGES["width_mult"].hi)
META_REQUIRED = ("architecture", "class_names", "input_size", "mean", "std")
META_OBJECTS = ("training", "metrics", "pruning", "data", "split", "extra")
LAYER_FIELDS = {
    "Conv2d": ("in_channels", "out_channels", "groups"),
    "BatchNorm2d": ("num_features",),
    "Linear": ("in_features", "out_features"),
}


def _field_error(where: str, name: str, problem: str, value: Any = None, *, show: bool = True) -> EdgepruneError:
    found = f", found {json.dumps(value)[:80]}" if show else ""
    return EdgepruneError(f"{where}: field {name!r} {problem}{found}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _positive_int(where: str, name: str, value: Any, maximum: int | None = None) -> int:
    if not _is_int(value) or value < 1 or (maximum is not None and value > maximum):
        limit = f" up to {maximum}" if maximum is not None else ""
        raise _field_error(where, name, f"must be a positive integer{limit}", value)
    return value


def _require_object(manifest: Any, where: str) -> None:
    if not isinstance(manifest, dict):
        raise EdgepruneError(f"{where} is not an edgeprune manifest: a JSON object is expected, "
                             f"found {type(manifest).__name__}")


def check_meta_fields(manifest: Any, where: str = MANIFEST_FILE) -> None:
    """The CheckpointMeta fields of a manifest: present, of the right type, in range."""
    _require_object(manifest, where)
    missing = [k for k in META_REQUIRED if k not in manifest]
    if missing:
        raise EdgepruneError(f"{where}: missing field(s) {', '.join(repr(k) for k in missing)}")
    arch = manifest["architecture"]
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise _field_error(where, "architecture", f"must be one of {', '.join(ARCHITECTURES)}", arch)
    names = manifest["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise _field_error(where, "class_names", "must be a list of non-empty strings", names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise _field_error(where, "class_names", "must name at least 2 distinct classes", names)
    if "num_classes" in manifest and manifest["num_classes"] != len(names):
        raise _field_error(where, "num_classes", f"must equal the {len(names)} class_names",
                           manifest["num_classes"])
    _positive_int(where, "input_size", manifest["input_size"], MAX_INPUT_SIZE)
    for key in ("mean", "std"):
        value = manifest[key]
        if not isinstance(value, list) or len(value) != 3 or not all(_is_number(v) for v in value):
            raise _field_error(where, key, "must be a list of 3 numbers (R, G, B)", value)
    if any(v <= 0 for v in manifest["std"]):
        raise _field_error(where, "std", "must hold positive numbers", manifest["std"])
    width = manifest.get("width_mult", 1.0)
    if not _is_number(width) or not 0 < width <= MAX_WIDTH_MULT:
        raise _field_error(where, "width_mult", f"must be a number in (0, {MAX_WIDTH_MULT:g}]", width)
    if width != 1.0 and arch != "mobilenet_v2":
        raise _field_error(where, "width_mult", f"must be 1.0 for {arch} (only mobilenet_v2 has one)", width)
    for key in META_OBJECTS:
        if key in manifest and not isinstance(manifest[key], dict):
            raise _field_error(where, key, "must be a JSON object", manifest[key])


def check_layer_specs(layers: Any, where: str = MANIFEST_FILE, shapes: dict[str, Any] | None = None) -> None:
    """`layers`: name -> constructor sizes, each a positive integer; with `shapes`, the sizes must
    agree with the weight shapes recorded for the same layer."""
    if not isinstance(layers, dict):
        raise _field_error(where, "layers", "must be a JSON object (layer name -> sizes)", layers)
    for name, spec in layers.items():
        field_name = f"layers.{name}"
        if not isinstance(spec, dict):
            raise _field_error(where, field_name, "must be a JSON object", spec)
        kind = spec.get("type")
        if not isinstance(kind, str) or kind not in LAYER_FIELDS:
            raise _field_error(where, f"{field_name}.type", f"must be one of {', '.join(LAYER_FIELDS)}", kind)
        for key in LAYER_FIELDS[kind]:
            if key not in spec:
                raise _field_error(where, f"{field_name}.{key}", f"is missing (a {kind} needs it)", show=False)
            _positive_int(where, f"{field_name}.{key}", spec[key])
        if kind == "Conv2d" and (spec["in_channels"] % spec["groups"] or spec["out_channels"] % spec["groups"]):
            raise _field_error(where, f"{field_name}.groups", "must divide in_channels and out_channels",
                               spec["groups"])
        weight = (shapes or {}).get(f"{name}.weight")
        if weight is None:
            continue
        if kind == "Conv2d":
            expected = [spec["out_channels"], spec["in_channels"] // spec["groups"]]
            actual = list(weight[:2])
        elif kind == "Linear":
            expected, actual = [spec["out_features"], spec["in_features"]], list(weight)
        else:
            expected, actual = [spec["num_features"]], list(weight)
        if actual != expected:
            sizes = ", ".join(f"{k} {spec[k]}" for k in LAYER_FIELDS[kind])
            raise EdgepruneError(
                f"{where}: fields {field_name!r} and 'shapes.{name}.weight' do not match ({sizes}; "
                f"weight {weight}): the manifest was edited or damaged"
            )


def check_shapes(shapes: Any, where: str = MANIFEST_FILE) -> None:
    if not isinstance(shapes, dict):
        raise _field_error(where, "shapes", "must be a JSON object (tensor name -> shape)", shapes)
    for name, shape in shapes.items():
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _field_error(where, f"shapes.{name}", "must be a list of non-negative integers", shape)


def check_manifest(manifest: Any, where: str = MANIFEST_FILE) -> None:
    """Every field a checkpoint is rebuilt from, before any tensor is built."""
    _require_object(manifest, where)
    if manifest.get("format") != FORMAT:
        raise EdgepruneError(f"{where} is not an edgeprune manifest (no \"format\": \"{FORMAT}\")")
    version = manifest.get("format_version")
    if not _is_int(version) or version < 1:
        raise _field_error(where, "format_version", "must be a positive integer", version)
    if version > FORMAT_VERSION:
        raise EdgepruneError(f"{where} was written by a newer edgeprune (format {version}); upgrade edgeprune")
    check_meta_fields(manifest, where)
    for key in ("layers", "shapes"):
        if key not in manifest:
            raise EdgepruneError(f"{where}: missing field {key!r}")
    check_shapes(manifest["shapes"], where)
    check_layer_specs(manifest["layers"], where, manifest["shapes"])


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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise EdgepruneError(f"{manifest_path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise EdgepruneError(f"cannot read {manifest_path}: {exc.strerror or exc}") from None
    check_manifest(manifest, str(manifest_path))
    return manifest


def meta_from_manifest(manifest: dict[str, Any], where: str = MANIFEST_FILE) -> CheckpointMeta:
    check_meta_fields(manifest, where)
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


def apply_layer_manifest(
    model: nn.Module, layers: dict[str, dict[str, Any]], where: str = MANIFEST_FILE
) -> None:
    """Resize the model's layers in place to the sizes recorded in a manifest."""
    check_layer_specs(layers, where)
    current = layer_manifest(model)
    for name, spec in layers.items():
        if name not in current:
            raise EdgepruneError(f"{where}: field 'layers' names layer {name!r}, which the architecture lacks")
        if current[name]["type"] != spec.get("type"):
            raise EdgepruneError(
                f"{where}: field 'layers.{name}.type' says {spec.get('type')}, the architecture "
                f"has a {current[name]['type']} there"
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
    where = str(ckpt / MANIFEST_FILE)
    meta = meta_from_manifest(manifest, where)
    weights_path = ckpt / WEIGHTS_FILE
    if not weights_path.is_file():
        raise EdgepruneError(f"{ckpt} has a manifest but no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise EdgepruneError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    check_finite(state, str(weights_path))

    shapes = manifest["shapes"]
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
    apply_layer_manifest(model, manifest["layers"], where)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EdgepruneError(
            f"checkpoint shapes do not match its manifest's layers: {str(exc)[:500]}"
        ) from None
    return model.to(device).eval(), meta


def check_data_for_model(meta: CheckpointMeta, data: Any, *, allow_other_split: bool = False,
                         what: str = "the model") -> str | None:
    """The one rule for using a model on a `DataBundle`: the same classes in the same order, and
    not another split of the data it was trained on (`data.check_same_split`: refused unless
    `allow_other_split`). Returns the note or warning to show beside the figures, or None."""
    from edgeprune.data.options import check_same_split

    ensure_same_classes(meta, data.class_names, data.name)
    if data.split is None:  # arrays handed in directly: no fingerprint to compare
        return None
    return check_same_split(meta.split, data.split, allow_other_split=allow_other_split, what=what)


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
