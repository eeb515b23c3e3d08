"""Parameter counts and sparsity of a model as it is (zeros counted, whatever made them)."""

from __future__ import annotations

from torch import nn

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def count_params(model: nn.Module) -> dict[str, int | float | None]:
    """Total and nonzero parameters, over all parameters and over the prunable weights.

    `sparsity` counts every parameter (biases and BatchNorm affine parameters included);
    `weight_sparsity` counts only the `weight` of Conv2d and Linear layers, the tensors pruning
    acts on. A sparsity is None when there is nothing to count.
    """
    params = nonzero = 0
    for p in model.parameters():
        params += p.numel()
        nonzero += int((p != 0).sum())
    weights = nonzero_weights = 0
    for module in model.modules():
        if isinstance(module, PRUNABLE_TYPES):
            weights += module.weight.numel()
            nonzero_weights += int((module.weight != 0).sum())
    return {
        "params": params,
        "nonzero_params": nonzero,
        "sparsity": 1 - nonzero / params if params else None,
        "prunable_weights": weights,
        "nonzero_prunable_weights": nonzero_weights,
        "weight_sparsity": 1 - nonzero_weights / weights if weights else None,
    }
