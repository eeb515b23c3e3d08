"""Helpers several test modules share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys

import torch

BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n"
NO_TORCH = ("torch", "torchvision", "torch_pruning")


def run_blocked(code: str, *args: str, block=NO_TORCH, check: bool = True) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter where the modules in `block` cannot be imported (by default
    torch: what an edge device with only the runtime extra has)."""
    done = subprocess.run([sys.executable, "-c", BLOCK.format(names=tuple(block)) + code, *args],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def kept_filters(dense: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Which filters of a layer survived pruning: each remaining filter matched to the one
    original filter with the same weights (the layer's inputs must not have been pruned)."""
    kept = []
    for w in pruned.detach():
        hits = [i for i, d in enumerate(dense) if torch.equal(d, w)]
        assert len(hits) == 1, hits
        kept.append(hits[0])
    return kept
