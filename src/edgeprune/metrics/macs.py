"""Multiply-accumulate counts per image, dense and restricted to nonzero weights."""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.metrics.params import PRUNABLE_TYPES

MACS_COUNTER = "torch_pruning.utils.count_ops_and_params"


def _example_input(model: nn.Module, input_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.zeros(1, 3, input_size, input_size, device=device)


def count_macs_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass of `example_inputs`, as torch-pruning counts them,
    in eval mode (the model's mode is restored). The one MAC counter of edgeprune: pruning's
    targets and `measure` use the same."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    finally:
        model.train(was_training)
    return int(macs), int(params)


def count_macs(model: nn.Module, input_size: int) -> tuple[int, str]:
    """MACs for one image as torch-pruning counts them, and the counter's name.

    torch-pruning counts each Conv2d/Linear weight once per position it is applied at, plus
    bias adds, BatchNorm, activations and pooling; zeros in the weights are not skipped.
    """
    macs, _ = count_macs_params(model, _example_input(model, input_size))
    return macs, MACS_COUNTER


def prunable_weight_macs(model: nn.Module, input_size: int) -> tuple[int, int]:
    """(all, nonzero-weight) MACs of the Conv2d/Linear weights for one image.

    Each weight element is applied once per output position (Conv2d: every output pixel;
    Linear: every leading index of the input), so its MACs are uses x weight elements. This
    matches how torch-pruning counts these layers, and is hand-written because no counter here
    skips zero weights.
    """
    totals = {"all": 0, "nonzero": 0}

    def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            uses = output.shape[0] * output.shape[2] * output.shape[3]
        else:
            uses = output.numel() // module.out_features
        totals["all"] += uses * module.weight.numel()
        totals["nonzero"] += uses * int((module.weight != 0).sum())

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, PRUNABLE_TYPES)]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(_example_input(model, input_size))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return totals["all"], totals["nonzero"]


def count_macs_nonzero(model: nn.Module, input_size: int, *, macs: int | None = None) -> int:
    """`count_macs`, with the Conv2d/Linear weight MACs counted only where the weight is nonzero.

    This is the arithmetic a sparse kernel would need; dense runtimes still do all of `macs`.
    Pass `macs` when already counted, to skip counting again.
    """
    if macs is None:
        macs, _ = count_macs(model, input_size)
    all_weight_macs, nonzero_weight_macs = prunable_weight_macs(model, input_size)
    return macs - all_weight_macs + nonzero_weight_macs
