"""Dataclass configs, one per pruning method (in the spirit of torchao / NNCF configs).

A config says *what* to remove; `prune(model, config, example_inputs)` does it and
`prune_iteratively(model, config, schedule, ...)` does it in steps. Every config is validated
when it is built, so a bad request fails before any tensor is touched.

Targets
- Unstructured configs take `sparsity`: the fraction of the counted weights (every Conv2d and
  Linear weight in scope) that is zero afterwards.
- Channel configs take `target` with `target_kind`: "channels" (fraction of the output channels
  of the prunable layers removed, applied uniformly per layer), "params" or "macs" (fraction of
  the whole model's parameters / multiply-accumulates removed, relative to the dense model; the
  per-layer channel ratio that achieves it is found by search), or "latency": the fraction of
  the dense model's batch-1 latency removed, measured on this device with `latency_runtime` and
  `latency_threads` (pruning.latency: a measured per-layer table and a greedy least-importance-
  per-millisecond cut); `latency_budget_ms` asks for an absolute latency instead of `target`.

Criteria
- Each config names its importance criterion (`config.criterion`, a name registered in
  edgeprune.pruning.importance, with `config.criterion_options`); `config.importance()` builds it.
  The named method configs fix theirs; `UnstructuredPruning` / `ChannelPruning` take any
  registered criterion, your own included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.importance import get_importance
from edgeprune.validation import check_option

SCOPES = ("all", "blocks", "head")
TARGET_KINDS = ("params", "channels", "macs", "latency")
SCORINGS = ("magnitude", "lamp")


def check_fraction(value: float, what: str) -> float:
    """A target must lie strictly between 0 and 1: 0 prunes nothing, 1 prunes everything."""
    return float(check_option("target", value, name=what))


def _set_checked(config, **names: str) -> None:
    """Check each field against its range in edgeprune.validation (key: field, value: range key)
    and store the normalised value (a frozen dataclass, hence object.__setattr__)."""
    for field_name, key in names.items():
        object.__setattr__(config, field_name, check_option(key, getattr(config, field_name)))


def resolve_round_to(value: int | str) -> int:
    """A channel multiple: a positive integer (or its digits), or "auto" for this CPU's
    (`edgeprune.runtime.measure.preferred_channel_multiple`)."""
    if value == "auto":
        from edgeprune.runtime.measure import preferred_channel_multiple

        return preferred_channel_multiple()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EdgepruneError(f"round_to must be a positive integer or 'auto', got {value!r}")
    if value < 1:
        raise EdgepruneError(f"round_to must be >= 1, got {value}")
    return value


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise EdgepruneError(f"unknown scope {scope!r}: choose one of {', '.join(SCOPES)}")


@dataclass(frozen=True)
class PruningConfig:
    """Base of every config. `method` is the CLI name; `structured` tells the two families apart.

    Subclasses provide `criterion` (a registered importance name) and `criterion_options` (its
    constructor options), as properties or, for the generic configs, as fields."""

    method: ClassVar[str] = ""
    structured: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}

    def importance(self):
        """A fresh instance of this config's criterion, from the registry (one per step)."""
        family = "channel" if self.structured else "weight"
        return get_importance(self.criterion, family, **self.criterion_options)  # type: ignore[attr-defined]

    @property
    def amount(self) -> float:  # the asked target, whatever the family calls it
        raise NotImplementedError

    def with_amount(self, amount: float) -> "PruningConfig":
        raise NotImplementedError


@dataclass(frozen=True)
class _Unstructured(PruningConfig):
    sparsity: float = 0.5
    per_layer: bool = False
    max_layer_sparsity: float = 0.98  # layer-collapse guard: no layer is ever pruned past this
    scope: str = "all"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", check_fraction(self.sparsity, "sparsity"))
        _check_scope(self.scope)
        _set_checked(self, max_layer_sparsity="max_layer_sparsity")
        if hasattr(self, "seed"):
            _set_checked(self, seed="seed")
        if self.per_layer and self.sparsity > self.max_layer_sparsity:
            raise EdgepruneError(
                f"per-layer sparsity {self.sparsity} exceeds the layer-collapse guard "
                f"max_layer_sparsity={self.max_layer_sparsity}"
            )

    @property
    def amount(self) -> float:
        return self.sparsity

    def with_amount(self, amount: float) -> "_Unstructured":
        return _replace(self, sparsity=amount)


@dataclass(frozen=True)
class L1Unstructured(_Unstructured):
    """Unstructured magnitude pruning: the smallest weights are zeroed, globally (default) or per layer.

    scoring="lamp" (default) ranks by LAMP scores (Lee et al. 2021): |w|^2 normalised by the
    larger weights of the same layer, ranked globally. It keeps layer collapse away even without
    the per-layer cap; measured on a MobileNetV2 trained on digits, one-shot 90% then 3 fine-tune
    epochs: 82.2% with LAMP vs 53.6% with plain global |w| (capped at 0.98 per layer).
    scoring="magnitude" is plain global |w|.
    """

    method: ClassVar[str] = "l1"
    scoring: str = "lamp"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scoring not in SCORINGS:
            raise EdgepruneError(f"unknown scoring {self.scoring!r}: {', '.join(SCORINGS)}")

    @property
    def criterion(self) -> str:
        return self.scoring

    @property
    def criterion_options(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class RandomUnstructured(_Unstructured):
    """Unstructured random pruning: the sanity baseline every real method must beat."""

    method: ClassVar[str] = "random"
    seed: int = 0

    @property
    def criterion(self) -> str:
        return "random"

    @property
    def criterion_options(self) -> dict[str, Any]:
        return {"seed": self.seed}


@dataclass(frozen=True)
class UnstructuredPruning(_Unstructured):
    """Unstructured pruning by any registered weight criterion, e.g. one of your own:
    `UnstructuredPruning(sparsity=0.8, criterion="my-score", criterion_options={...})`."""

    method: ClassVar[str] = "unstructured"
    criterion: str = "lamp"
    criterion_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.importance()  # an unknown name or option fails here, before any tensor is touched


@dataclass(frozen=True)
class _Channel(PruningConfig):
    structured: ClassVar[bool] = True
    target: float | None = None
    target_kind: str = "channels"
    # Kept channel counts are multiples of this (SIMD-friendly). "auto": the multiple this CPU's
    # kernels block on (16 with AVX-512, 8 on AVX2 / NEON), resolved when the config is built so
    # the config dict, hence the pruning record, holds the number actually used.
    round_to: int | str = "auto"
    min_channels: int = 8  # no layer keeps fewer output channels than this
    scope: str = "all"
    tolerance: float = 0.005  # for params/macs targets: |achieved - asked| allowed by the search
    ratio: float | None = field(default=None, repr=False)  # alias: target with target_kind="channels"
    # target_kind="latency": the backend and threads the latency is measured with, on this
    # device; latency_budget_ms: an absolute batch-1 latency to reach instead of a fraction.
    latency_runtime: str = "onnxruntime"
    latency_threads: int = 1
    latency_budget_ms: float | None = None
    # No group keeps fewer than this fraction of its dense channels under a latency target: the
    # knapsack otherwise empties the cheap-to-score, costly-to-run early high-resolution layers
    # (measured: MobileNetV2 at 224, 60 % latency cut, residual bottlenecks at 16 of 64-96
    # channels, the model collapsed to the majority class).
    latency_min_keep: float = 0.25

    def __post_init__(self) -> None:
        if self.latency_budget_ms is not None:
            object.__setattr__(self, "latency_budget_ms",
                               check_option("latency_budget_ms", self.latency_budget_ms))
            if self.target is not None or self.ratio is not None:
                raise EdgepruneError("give either a latency budget or a target, not both")
            if self.target_kind not in ("channels", "latency"):  # channels: the untouched default
                raise EdgepruneError("a latency budget goes with target_kind='latency'")
            object.__setattr__(self, "target_kind", "latency")
        if self.target_kind == "latency":
            from edgeprune.runtime.backends import check_runtime

            check_runtime(self.latency_runtime, allow_auto=False)
            _set_checked(self, latency_threads="threads")
            if not 0.0 <= self.latency_min_keep < 1.0:
                raise EdgepruneError(f"latency_min_keep must be in [0, 1), got {self.latency_min_keep}")
        if self.ratio is not None:
            if self.target is not None and self.target != self.ratio:
                raise EdgepruneError("give either ratio or target, not both")
            object.__setattr__(self, "target", self.ratio)
            object.__setattr__(self, "target_kind", "channels")
            object.__setattr__(self, "ratio", None)
        if self.target is None and self.latency_budget_ms is None:
            raise EdgepruneError(f"{type(self).__name__} needs a target (or ratio, or a latency budget)")
        if self.target is not None:
            object.__setattr__(self, "target", check_fraction(self.target, "target"))
        _check_scope(self.scope)
        if self.target_kind not in TARGET_KINDS:
            raise EdgepruneError(
                f"unknown target kind {self.target_kind!r}: choose one of {', '.join(TARGET_KINDS)}"
            )
        object.__setattr__(self, "round_to", resolve_round_to(self.round_to))
        _set_checked(self, round_to="round_to", min_channels="min_channels", tolerance="tolerance")
        if hasattr(self, "seed"):
            _set_checked(self, seed="seed")

    # l2 / l1 take no options. A plain class attribute (no annotation, so not a field, and not
    # a property) that ChannelPruning can turn into a field.
    criterion_options = MappingProxyType({})

    @property
    def amount(self) -> float:
        if self.target is None:
            raise EdgepruneError(
                "a latency budget becomes a fraction only against the dense model's measured "
                "latency: use Pruner(...).amount")
        return float(self.target)

    def with_amount(self, amount: float) -> "_Channel":
        return _replace(self, target=amount)


@dataclass(frozen=True)
class L2Channel(_Channel):
    """Filter pruning by the L2 norm of each channel's weights, summed over its dependency group."""

    method: ClassVar[str] = "l2-channel"
    criterion: ClassVar[str] = "l2"


@dataclass(frozen=True)
class L1Channel(_Channel):
    """Filter pruning by the L1 norm (Li et al. 2017)."""

    method: ClassVar[str] = "l1-channel"
    criterion: ClassVar[str] = "l1"


@dataclass(frozen=True)
class TaylorChannel(_Channel):
    """First-order Taylor importance |w * dL/dw| (Molchanov et al. 2017) from a few training batches."""

    method: ClassVar[str] = "taylor-channel"
    criterion: ClassVar[str] = "taylor"
    num_batches: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        _set_checked(self, num_batches="num_batches")

    @property
    def criterion_options(self) -> dict[str, Any]:
        return {"num_batches": self.num_batches}


@dataclass(frozen=True)
class RandomChannel(_Channel):
    """Structured random baseline: random channels removed, same counts as the norm methods."""

    method: ClassVar[str] = "random-channel"
    criterion: ClassVar[str] = "random"
    seed: int = 0

    @property
    def criterion_options(self) -> dict[str, Any]:
        return {"seed": self.seed}


@dataclass(frozen=True)
class ChannelPruning(_Channel):
    """Channel pruning by any registered channel criterion, e.g. one of your own:
    `ChannelPruning(target=0.3, criterion="my-score", criterion_options={...})`."""

    method: ClassVar[str] = "channel"
    criterion: str = "l2"
    criterion_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.importance()  # an unknown name or option fails here, before any tensor is touched


def _replace(config, **changes):
    from dataclasses import replace

    return replace(config, **changes)


METHODS: dict[str, type[PruningConfig]] = {
    cls.method: cls
    for cls in (L1Unstructured, RandomUnstructured, L2Channel, L1Channel, TaylorChannel, RandomChannel)
}


def make_config(method: str, target: float, **options: Any) -> PruningConfig:
    """Build the config for a CLI method name; options that do not apply to it are an error."""
    try:
        cls = METHODS[method]
    except KeyError:
        raise EdgepruneError(
            f"unknown pruning method {method!r}: choose one of {', '.join(METHODS)}"
        ) from None
    names = set(cls.__dataclass_fields__)
    bad = sorted(k for k, v in options.items() if k not in names and v is not None)
    if bad:
        raise EdgepruneError(f"option(s) {', '.join(bad)} do not apply to method {method}")
    kwargs = {k: v for k, v in options.items() if k in names and v is not None}
    if cls.structured:
        return cls(target=target, **kwargs)
    return cls(sparsity=target, **kwargs)
