"""Importance criteria: objects in a registry (the Torch-Pruning pattern), one family per kind
of pruning. Low scores are pruned first.

- Weight criteria (unstructured) score every weight of one layer: `scores(weight) -> flat tensor`.
  Built in: "magnitude", "lamp", "random".
- Channel criteria (structured) score the channels of one torch-pruning dependency group:
  `criterion(group) -> 1-D tensor`, usually by wrapping a `tp.importance.Importance`. A channel's
  score sums over every tensor slice its removal deletes (conv filter, batch-norm entry, next
  layer's input slice), so a depthwise group or a residual addition is scored as the unit it is
  removed as. `prepare(model, ...)` runs once per pruning step before any group is scored: a
  criterion with `needs_gradients = True` gets its gradient pass there. Built in: "l2", "l1",
  "taylor", "random".

A config names its criterion (`config.criterion`, options in `config.criterion_options`), and
the pruning code asks `get_importance` for it. Your own criterion:

    @register_importance("my-score")
    class MyScore(ChannelImportance):
        def __call__(self, group): ...

    prune(model, ChannelPruning(criterion="my-score", target=0.3), example_inputs)
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Iterable

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import EdgepruneError

FAMILIES = ("weight", "channel")


class WeightImportance:
    """Scores the weights of one layer for unstructured pruning. Subclasses implement `scores`.

    A new instance is made for every pruning step and scores the layers in execution order, so
    per-run state (a random generator) starts afresh each step."""

    family: ClassVar[str] = "weight"
    name: ClassVar[str] = ""  # set by register_importance

    def scores(self, weight: torch.Tensor) -> torch.Tensor:
        """One float score per element of `weight`, flattened (any device)."""
        raise NotImplementedError


class ChannelImportance:
    """Scores the channels of a dependency group for structured pruning.

    Give a torch-pruning estimator to the constructor, or override `__call__`. A new instance
    is made for every pruning step; `prepare` runs once before the step's groups are scored."""

    family: ClassVar[str] = "channel"
    name: ClassVar[str] = ""  # set by register_importance
    needs_gradients: ClassVar[bool] = False  # True: prepare() leaves summed gradients in .grad
    num_batches: int = 4  # training batches for the gradient pass

    def __init__(self, estimator: tp.importance.Importance | None = None):
        self.estimator = estimator

    def prepare(
        self,
        model: nn.Module,
        *,
        batches: Iterable | None = None,
        layers: dict[str, nn.Module] | None = None,
        ratio: float = 0.0,
    ) -> None:
        """Called once per step before scoring. `layers`: the in-scope layers by name; `ratio`:
        the step's cumulative channel ratio. The caller clears `.grad` after the step."""
        if self.needs_gradients:
            accumulate_gradients(model, batches, self.num_batches, layers or {}, who=self.name)

    def across_groups(self, group: Any) -> torch.Tensor:
        """The group's channel scores made comparable with other groups' (the latency knapsack
        weighs channels of different layers against each other). By default the scores divided
        by their mean (Torch-Pruning's "mean" normaliser): a weight magnitude says nothing of how
        much the loss depends on one layer rather than another, so every group counts its average
        channel as 1. A criterion whose scores estimate the loss change itself (Taylor) overrides
        this."""
        scores = self(group).float()
        return scores / scores.mean().clamp_min(torch.finfo(torch.float32).tiny)

    def __call__(self, group: Any) -> torch.Tensor:
        if self.estimator is None:
            raise NotImplementedError(
                f"{type(self).__name__}: pass a tp.importance.Importance or override __call__"
            )
        return self.estimator(group)


# ---------------------------------------------------------------- the registry
# family -> name -> class; e.g. sorted(IMPORTANCES["channel"]) lists the channel criteria.
IMPORTANCES: dict[str, dict[str, type]] = {family: {} for family in FAMILIES}


def register_importance(name: str, *, replace: bool = False) -> Callable[[type], type]:
    """Class decorator: make a WeightImportance / ChannelImportance subclass available by `name`
    in its family (the same name may exist once per family)."""

    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, (WeightImportance, ChannelImportance))):
            raise EdgepruneError(
                f"register_importance({name!r}) decorates a WeightImportance or ChannelImportance "
                f"subclass, got {cls!r}"
            )
        table = IMPORTANCES[cls.family]
        if not replace and table.get(name, cls) is not cls:
            raise EdgepruneError(
                f"a {cls.family} criterion named {name!r} is already registered "
                f"({table[name].__name__}); choose another name or pass replace=True"
            )
        cls.name = name
        table[name] = cls
        return cls

    return decorate


def get_importance(name: str, family: str | None = None, **options: Any):
    """A new criterion instance by registered name. `family` ("weight" or "channel") is needed
    only for a name registered in both (e.g. "random"); options go to its constructor."""
    if family is not None and family not in FAMILIES:
        raise EdgepruneError(f"unknown criterion family {family!r}: choose one of {', '.join(FAMILIES)}")
    found = [f for f in (FAMILIES if family is None else (family,)) if name in IMPORTANCES[f]]
    if not found:
        known = "; ".join(f"{f}: {', '.join(sorted(IMPORTANCES[f]))}"
                          for f in (FAMILIES if family is None else (family,)))
        raise EdgepruneError(f"unknown importance criterion {name!r} ({known})")
    if len(found) > 1:
        raise EdgepruneError(
            f"criterion {name!r} exists for weights and for channels: pass family='weight' or "
            "family='channel'"
        )
    cls = IMPORTANCES[found[0]][name]
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        raise EdgepruneError(f"{found[0]} criterion {name!r} does not take these options: {exc}") from None
    return cls(**options)


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


@register_importance("magnitude")
class MagnitudeWeight(WeightImportance):
    """|w|, ranked globally: simple, but can empty a layer whose weights are all small."""

    def scores(self, weight: torch.Tensor) -> torch.Tensor:
        return magnitude_scores(weight)


@register_importance("lamp")
class LampWeight(WeightImportance):
    """LAMP scores (see lamp_scores): layer-adaptive magnitude."""

    def scores(self, weight: torch.Tensor) -> torch.Tensor:
        return lamp_scores(weight)


@register_importance("random")
class RandomWeight(WeightImportance):
    """Seeded uniform scores, one generator over all layers in order: the sanity baseline."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def scores(self, weight: torch.Tensor) -> torch.Tensor:
        return random_scores(weight, self.generator)


# ---------------------------------------------------------------- per channel (structured)
@register_importance("l2")
class L2Norm(ChannelImportance):
    """Mean over the group of each channel's L2 norm."""

    def __init__(self):
        super().__init__(tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None))


@register_importance("l1")
class L1Norm(ChannelImportance):
    """Mean over the group of each channel's L1 norm (Li et al. 2017)."""

    def __init__(self):
        super().__init__(tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None))


@register_importance("taylor")
class Taylor(ChannelImportance):
    """First-order Taylor |w * dL/dw| (Molchanov et al. 2017), gradients summed over a few
    training batches in prepare()."""

    needs_gradients = True

    def __init__(self, num_batches: int = 4):
        super().__init__(tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None))
        self.summed = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
        self.num_batches = num_batches

    def across_groups(self, group: Any) -> torch.Tensor:
        """|w * dL/dw| summed over a slice is the first-order loss change of zeroing it, so a
        channel's loss change is the sum over every slice its removal deletes. The "mean"
        reduction used for ranking within a group divides by the group's number of slices, which
        differs between groups; summed, the scores are in loss units and comparable across groups
        as they are (HALP's latency-saliency knapsack uses them so)."""
        return self.summed(group)


@register_importance("random")
class RandomChannels(ChannelImportance):
    """Seeded uniform scores. tp.importance.RandomImportance draws from the global RNG; this one
    is reproducible, and re-seeded per step from the step's ratio so steps draw afresh."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def prepare(self, model, *, batches=None, layers=None, ratio: float = 0.0) -> None:
        self.generator.manual_seed(self.seed + int(round(ratio * 1e6)))

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor:
        _, idxs = group[0]
        return torch.rand(len(idxs), generator=self.generator)


def accumulate_gradients(
    model: nn.Module, batches: Iterable | None, num_batches: int, layers: dict[str, nn.Module],
    who: str = "this criterion",
) -> int:
    """Backward passes over up to `num_batches` training batches, leaving summed gradients in
    `.grad` for a gradient-based criterion. Fails loudly if the layers to be scored got none."""
    import torch.nn.functional as F

    if batches is None:
        raise EdgepruneError(
            f"the {who} criterion needs training batches to compute gradients (pass batches=...)"
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
        raise EdgepruneError(f"the {who} criterion got no training batch to compute gradients from")
    missing = [
        name for name, m in layers.items()
        if m.weight.grad is None or not torch.isfinite(m.weight.grad).all()
        or float(m.weight.grad.abs().sum()) == 0.0
    ]
    if missing:
        raise EdgepruneError(
            f"the {who} criterion: no usable gradient reached {len(missing)} layer(s) "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); are the weights "
            "frozen (requires_grad=False) or the loss detached?"
        )
    return used
