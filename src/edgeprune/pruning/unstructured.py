"""Unstructured pruning: exact global (or per-layer) weight selection with a layer-collapse guard.

Masks are plain boolean tensors held by a `MaskState`, keyed by module name, not
`torch.nn.utils.prune` reparametrisations: those add `weight_orig`/`weight_mask` copies that
must be removed before saving, double the memory, and `global_unstructured` fails on
channels_last weights. `MaskState.apply` zeroes the pruned weights in place (stride-agnostic);
fine-tuning keeps them at zero through `after_step=` (after every optimizer step) and, as a
belt-and-braces, a forward pre-hook while `masks.enforce(model)` is active.

Exactness: the k = round(S * n) lowest-scoring weights are chosen over the n counted weights,
ties broken by position, with weights pruned in an earlier step forced in first, so a schedule's
last step lands exactly on the target and nothing is counted twice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.config import _Unstructured
from edgeprune.pruning.scope import layers_in_scope


@dataclass
class MaskState:
    """Which weights are pruned (True = pruned, stays zero), by module name."""

    pruned: dict[str, torch.Tensor] = field(default_factory=dict)
    capped: list[str] = field(default_factory=list)  # layers held at max_layer_sparsity

    def copy(self) -> "MaskState":
        return MaskState({k: v.clone() for k, v in self.pruned.items()}, list(self.capped))

    @property
    def counted(self) -> int:
        return sum(m.numel() for m in self.pruned.values())

    @property
    def num_pruned(self) -> int:
        return int(sum(int(torch.count_nonzero(m)) for m in self.pruned.values()))

    @property
    def sparsity(self) -> float:
        return self.num_pruned / self.counted if self.counted else 0.0

    def layer_sparsity(self) -> dict[str, float]:
        return {k: float(m.float().mean()) for k, m in self.pruned.items()}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero every pruned weight of `model` in place (call after each optimizer step)."""
        for name, mask in self.pruned.items():
            w = model.get_submodule(name).weight
            if mask.device != w.device:
                mask = mask.to(w.device)
                self.pruned[name] = mask
            w.masked_fill_(mask, 0.0)

    def bind(self, model: nn.Module) -> Callable[[], None]:
        """A no-argument callable for `fit(after_step=...)`."""
        return lambda: self.apply(model)

    @contextlib.contextmanager
    def enforce(self, model: nn.Module) -> Iterator[None]:
        """While active, every forward pass first re-zeroes the pruned weights, whatever the
        training loop does; the weights are zeroed once more on exit."""
        handles = []
        for name in self.pruned:
            module = model.get_submodule(name)
            handles.append(
                module.register_forward_pre_hook(lambda mod, _inp, _n=name: self._apply_one(mod, _n))
            )
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self.apply(model)

    @torch.no_grad()
    def _apply_one(self, module: nn.Module, name: str) -> None:
        mask = self.pruned[name]
        if mask.device != module.weight.device:
            mask = self.pruned[name] = mask.to(module.weight.device)
        module.weight.masked_fill_(mask, 0.0)

    def check_shapes(self, model: nn.Module) -> None:
        for name, mask in self.pruned.items():
            if model.get_submodule(name).weight.shape != mask.shape:
                raise EdgepruneError(f"mask for {name} no longer matches the layer's shape")


def _select_lowest(scores: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Exactly k lowest scores across the list; ties go to the earlier position (deterministic).
    Returns one boolean tensor per entry (True = selected)."""
    total = sum(s.numel() for s in scores)
    if k <= 0:
        return [torch.zeros_like(s, dtype=torch.bool) for s in scores]
    if k >= total:
        return [torch.ones_like(s, dtype=torch.bool) for s in scores]
    flat = torch.cat(scores)
    threshold = torch.kthvalue(flat, k).values
    below = flat < threshold
    need = k - int(torch.count_nonzero(below))
    at = (flat == threshold).nonzero().flatten()[:need]  # nonzero is in index order
    below[at] = True
    return list(torch.split(below, [s.numel() for s in scores]))


def _select_capped(
    scores: list[torch.Tensor], k: int, caps: list[int]
) -> list[torch.Tensor]:
    """Global lowest-k selection where layer i contributes at most caps[i] weights.

    Layers that the unconstrained selection over-fills are fixed at their cap and removed from
    the pool, and the rest re-selected; a fixed layer would only want more as the threshold rises,
    so the result is the exact constrained optimum (at most one pass per layer)."""
    chosen: list[torch.Tensor | None] = [None] * len(scores)
    active = list(range(len(scores)))
    remaining = k
    while True:
        capacity = sum(scores[i].numel() for i in active)
        if remaining > capacity:
            raise EdgepruneError("internal: capped selection ran out of weights")
        picks = _select_lowest([scores[i] for i in active], remaining)
        over = [i for i, p in zip(active, picks) if int(torch.count_nonzero(p)) > caps[i]]
        if not over:
            for i, p in zip(active, picks):
                chosen[i] = p
            return [c for c in chosen]  # type: ignore[misc]
        for i in over:
            chosen[i] = _select_lowest([scores[i]], caps[i])[0]
            remaining -= caps[i]
            active.remove(i)


@torch.no_grad()
def prune_unstructured(
    model: nn.Module,
    config: _Unstructured,
    example_inputs: torch.Tensor,
    masks: MaskState | None = None,
    log: Callable[[str], None] | None = None,
) -> MaskState:
    """Zero weights of `model` in place so that exactly `config.sparsity` of the counted weights
    (all Conv2d/Linear weights in scope) are pruned, keeping the masks of `masks` (earlier steps).
    Returns the new MaskState."""
    names = (
        list(masks.pruned)
        if masks is not None and masks.pruned
        else layers_in_scope(model, config.scope, example_inputs)
    )
    modules = [model.get_submodule(n) for n in names]
    prior = [
        masks.pruned[n].to(m.weight.device)
        if masks is not None and n in masks.pruned
        else torch.zeros_like(m.weight, dtype=torch.bool)
        for n, m in zip(names, modules)
    ]
    if masks is not None:
        masks.check_shapes(model)
    bad = [n for n, m in zip(names, modules) if not bool(torch.isfinite(m.weight).all())]
    if bad:
        raise EdgepruneError(
            f"layer(s) {', '.join(bad[:4])} hold NaN/inf weights (did fine-tuning diverge? lower "
            "the learning rate); cannot rank weights by magnitude"
        )

    # Scores from the config's criterion, with already-pruned weights forced to the front of
    # the ranking.
    criterion = config.importance()
    raw = [criterion.scores(m.weight).flatten() for m in modules]
    wrong = [n for n, s, m in zip(names, raw, modules) if s.numel() != m.weight.numel()]
    if wrong:
        raise EdgepruneError(
            f"criterion {criterion.name!r} returned the wrong number of scores for "
            f"{', '.join(wrong[:4])}: scores(weight) must give one per weight"
        )
    scores = []
    for s, p in zip(raw, prior):
        s = s.cpu().clone()
        s[p.flatten().cpu()] = float("-inf")
        scores.append(s)

    sizes = [m.weight.numel() for m in modules]
    n_prior = [int(torch.count_nonzero(p)) for p in prior]
    caps = [max(int(config.max_layer_sparsity * n), np_) for n, np_ in zip(sizes, n_prior)]
    if config.per_layer:
        picks = [
            _select_lowest([s], max(min(round(config.sparsity * n), cap), np_))[0]
            for s, n, cap, np_ in zip(scores, sizes, caps, n_prior)
        ]
    else:
        total = sum(sizes)
        k = max(round(config.sparsity * total), sum(n_prior))
        if k > sum(caps):
            raise EdgepruneError(
                f"sparsity {config.sparsity:.4f} cannot be reached with no layer above "
                f"max_layer_sparsity={config.max_layer_sparsity} (at most "
                f"{sum(caps) / total:.4f} of the counted weights can be pruned)"
            )
        picks = _select_capped(scores, k, caps)

    new = MaskState()
    for name, module, pick, cap, size in zip(names, modules, picks, caps, sizes):
        mask = pick.view(module.weight.shape).to(module.weight.device)
        if bool(mask.all()):
            raise EdgepruneError(f"pruning would empty layer {name} entirely; refusing")
        new.pruned[name] = mask
        if int(torch.count_nonzero(mask)) >= cap and size > 1 and not config.per_layer:
            new.capped.append(name)
    new.apply(model)
    if new.capped and log:
        log(
            f"layer-collapse guard: {len(new.capped)} layer(s) held at the maximum per-layer "
            f"sparsity {config.max_layer_sparsity:.0%}: {', '.join(new.capped[:6])}"
            + (", ..." if len(new.capped) > 6 else "")
        )
    return new


def weight_sparsity(model: nn.Module, names: list[str]) -> float:
    """Fraction of exact zeros in the named layers' weights (what a sparse format would skip)."""
    zeros = total = 0
    for n in names:
        w = model.get_submodule(n).weight
        zeros += w.numel() - int(torch.count_nonzero(w))
        total += w.numel()
    return zeros / total if total else 0.0
