"""Importance scores: per weight (unstructured) and per channel (structured, from torch-pruning).

Channel importances are torch-pruning's group estimators: a channel's score sums over every
tensor slice its removal deletes (conv filter, batch-norm entry, next layer's input slice), so a
depthwise group or a residual addition is scored as the unit it is removed as.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from edgeprune.errors import EdgepruneError


# ---------------------------------------------------------------- per weight (unstructured)
def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().float().flatten()


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP (Lee et al., ICLR 2021): w_u^2 / sum_{v >= u} w_v^2 over the layer's weights sorted by
    magnitude. Comparable across layers, and every layer's largest weight scores 1, so a global
    threshold below 1 never empties a layer. Hand-written: torch-pruning's LAMP is per channel."""
    sq = weight.detach().float().flatten().pow(2)
    sorted_sq, order = torch.sort(sq, stable=True)
    # suffix sums: sum of this and all larger squared weights
    suffix = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
    scores_sorted = sorted_sq / suffix.clamp_min(torch.finfo(torch.float32).tiny)
    scores = torch.empty_like(sq)
    scores[order] = scores_sorted
    return scores


def random_scores(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(weight.numel(), generator=generator)


# ---------------------------------------------------------------- per channel (structured)
def channel_importance(method: str, seed: int = 0) -> tp.importance.Importance:
    """torch-pruning's group importance estimator for a structured method name."""
    if method == "l2-channel":
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
    if method == "l1-channel":
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    if method == "taylor-channel":
        return tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None)
    if method == "random-channel":
        return _SeededRandomImportance(seed)
    raise EdgepruneError(f"no channel importance for method {method!r}")


class _SeededRandomImportance(tp.importance.Importance):
    """tp.importance.RandomImportance draws from the global RNG; this one is reproducible."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, group, **kwargs):
        _, idxs = group[0]
        return torch.rand(len(idxs), generator=self.generator)


def accumulate_taylor_gradients(model, batches, num_batches: int, prunable: dict) -> int:
    """Backward passes over up to `num_batches` training batches, leaving summed gradients in
    `.grad` for GroupTaylorImportance. Fails loudly if the layers to be scored got no gradient."""
    import torch.nn.functional as F

    if batches is None:
        raise EdgepruneError(
            "taylor-channel needs training batches to compute gradients (pass batches=...)"
        )
    was_training = model.training
    model.eval()  # batch-norm statistics must not move while scoring
    for p in model.parameters():
        p.grad = None
    used = 0
    try:
        with torch.enable_grad():
            for x, y in batches:
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                used += 1
                if used >= num_batches:
                    break
    finally:
        model.train(was_training)
    if used == 0:
        raise EdgepruneError("taylor-channel got no training batch to compute gradients from")
    missing = [
        name for name, m in prunable.items()
        if m.weight.grad is None or not torch.isfinite(m.weight.grad).all()
        or float(m.weight.grad.abs().sum()) == 0.0
    ]
    if missing:
        raise EdgepruneError(
            f"taylor-channel: no usable gradient reached {len(missing)} layer(s) "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); are the weights "
            "frozen (requires_grad=False) or the loss detached?"
        )
    return used
