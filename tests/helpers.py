"""Helpers several test modules share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import torch


def kept_filters(dense: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Which filters of a layer survived pruning: each remaining filter matched to the one
    original filter with the same weights (the layer's inputs must not have been pruned)."""
    kept = []
    for w in pruned.detach():
        hits = [i for i, d in enumerate(dense) if torch.equal(d, w)]
        assert len(hits) == 1, hits
        kept.append(hits[0])
    return kept
