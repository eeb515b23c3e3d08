"""Which layers a pruning run may touch: `--scope head|blocks|all`, and the output layer.

- head:   the classifier (MobileNetV2/VGG `classifier`, ResNet `fc`), the part a transfer-learning
          run replaces; the "safest option" of the earlier lecture.
- blocks: the middle of the network (MobileNetV2 `features.1`-`features.17`, ResNet `layer1`-
          `layer4`, VGG `features` after the first conv), neither stem nor head.
- all:    every Conv2d and Linear layer.

Models that are none of the three torchvision families fall back to a generic rule: the head is
the layer that produces the output, the stem the first layer that runs, blocks the rest.
The output layer (whose output dimension is the number of classes) is identified by tracing, so
it is never shrunk in its output dimension whatever the scope.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from edgeprune.errors import EdgepruneError

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def detect_architecture(model: nn.Module) -> str | None:
    import torchvision.models as tvm

    if isinstance(model, tvm.MobileNetV2):
        return "mobilenet_v2"
    if isinstance(model, tvm.ResNet):
        return "resnet18"  # the rules below hold for every torchvision ResNet
    if isinstance(model, tvm.VGG):
        return "vgg16"
    return None


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d / Linear with a weight, by module name, in definition order."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and getattr(m, "weight", None) is not None
    }


def execution_order(model: nn.Module, example_inputs: torch.Tensor) -> list[str]:
    """Names of the prunable layers in the order a forward pass runs them."""
    order: list[str] = []
    names = {m: n for n, m in prunable_layers(model).items()}
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(names[mod]))
        for m in names
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


_RULES: dict[str, dict[str, str]] = {
    # regexes on module names
    "mobilenet_v2": {"head": r"^classifier\.", "blocks": r"^features\.(1[0-7]?|[2-9])\."},
    "resnet18": {"head": r"^fc$", "blocks": r"^layer[1-4]\."},
    "vgg16": {"head": r"^classifier\.", "blocks": r"^features\.(?!0$)\d+$"},
}


def output_layer(model: nn.Module, example_inputs: torch.Tensor) -> str:
    order = execution_order(model, example_inputs)
    if not order:
        raise EdgepruneError(
            f"{type(model).__name__} has no prunable layers (no Conv2d or Linear ran in a forward pass)"
        )
    return order[-1]


def layers_in_scope(model: nn.Module, scope: str, example_inputs: torch.Tensor) -> list[str]:
    """Names of the prunable layers that `scope` covers, in execution order (non-empty or raises)."""
    layers = prunable_layers(model)
    if not layers:
        raise EdgepruneError(
            f"{type(model).__name__} has no prunable layers: pruning needs Conv2d or Linear layers"
        )
    order = execution_order(model, example_inputs)
    order += [n for n in layers if n not in order]  # layers that did not run keep definition order
    if scope == "all":
        chosen = order
    else:
        arch = detect_architecture(model)
        if arch is not None:
            rx = re.compile(_RULES[arch][scope])
            chosen = [n for n in order if rx.search(n)]
        else:
            head = order[-1]
            chosen = [head] if scope == "head" else [n for n in order[1:] if n != head]
    if not chosen:
        raise EdgepruneError(f"scope {scope!r} covers no prunable layer of {type(model).__name__}")
    return chosen
