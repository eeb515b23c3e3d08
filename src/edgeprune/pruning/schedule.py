"""Pruning regimes as cumulative targets per step (fraction removed after step k of N).

- oneshot:   [S]
- geometric: 1 - (1 - S)^(k/N): each step removes S_step = 1 - (1 - S)^(1/N) of what remains
- linear:    S * k / N
- agp:       S * (1 - (1 - k/N)^3), the polynomial decay of Zhu & Gupta 2017 / TF-MOT's
             PolynomialDecay(initial_sparsity=0, final_sparsity=S, power=3, begin_step=0,
             end_step=N): big steps early while the network is redundant, small steps late.

Targets are cumulative and relative to the dense model, so the last step is exactly S whatever
happened before (nothing is counted twice).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.config import check_fraction
from edgeprune.validation import check_option

SCHEDULES = ("oneshot", "geometric", "linear", "agp")
AGP_POWER = 3


@dataclass(frozen=True)
class Schedule:
    kind: str = "oneshot"
    steps: int = 1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise EdgepruneError(
                f"unknown schedule {self.kind!r}: choose one of {', '.join(SCHEDULES)}"
            )
        object.__setattr__(self, "steps", check_option("steps", self.steps))
        if self.kind == "oneshot" and self.steps != 1:
            raise EdgepruneError(
                f"the oneshot schedule has exactly one step (got steps={self.steps}); "
                "use geometric, linear or agp for several"
            )

    @property
    def num_steps(self) -> int:
        return self.steps

    def targets(self, target: float) -> list[float]:
        return cumulative_targets(self.kind, target, self.steps)

    def to_dict(self) -> dict:
        return asdict(self)


def cumulative_targets(kind: str, target: float, steps: int = 1) -> list[float]:
    check_fraction(target, "target")
    n = steps
    if kind == "oneshot":
        return [target]
    if kind == "geometric":
        out = [1.0 - (1.0 - target) ** (k / n) for k in range(1, n + 1)]
    elif kind == "linear":
        out = [target * k / n for k in range(1, n + 1)]
    elif kind == "agp":
        out = [target * (1.0 - (1.0 - k / n) ** AGP_POWER) for k in range(1, n + 1)]
    else:
        raise EdgepruneError(f"unknown schedule {kind!r}: choose one of {', '.join(SCHEDULES)}")
    out[-1] = target  # exact, not 1 - (1 - S)^1 with rounding error
    return out


def step_fraction(target: float, steps: int) -> float:
    """Geometric S_step: the fraction of what remains that each of N steps removes."""
    return 1.0 - (1.0 - target) ** (1.0 / steps)
