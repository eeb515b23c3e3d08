"""Batch-norm recalibration after a pruning step.

Pruning changes the distribution of every activation downstream, so the running mean/variance
the batch norms learned no longer match: re-estimating them on a few training batches (no
gradient step) recovers much of the accuracy lost at the pruning step for free.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> int:
    """Reset every batch norm's running statistics and re-estimate them as an exact cumulative
    average (momentum=None) over `batches` of (x, y) in train mode. Returns the batches used;
    leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        model.eval()
        return 0
    saved = [(m, m.momentum) for m in norms]
    stats = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms if m.track_running_stats]
    norms = [m for m in norms if m.track_running_stats]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    used = 0
    model.train()
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if x.shape[0] < 2:
                continue  # a batch of one has no variance
            model(x)
            used += 1
            if max_batches is not None and used >= max_batches:
                break
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        if used == 0:  # nothing seen: keep the old statistics rather than the reset ones
            for m, (mean, var, count) in zip(norms, stats):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.eval()
    return used
