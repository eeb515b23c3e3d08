"""Every numeric option's range, in one table, and the one check that enforces it.

The config objects (`TrainRecipe`, the pruning configs, `Schedule`, `PruneJob`, `DataOptions`)
and the functions that take numbers directly (`create_model`, `set_threads`, export, bench) call
`check_option` when they are built or called, so the CLI, study configs and the Python API all
give the same error before any work starts. NaN passes every comparison (`nan < 0` is False) and
bool is an int, so both are refused explicitly: a NaN learning rate or `seed=True` is a mistake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from edgeprune.errors import EdgepruneError

MAX_SEED = 2**32 - 1  # numpy's seed range; torch takes more, but every seed goes to both


@dataclass(frozen=True)
class Bounds:
    """A range: `lo`/`hi` inclusive unless `lo_open`/`hi_open`; None = unbounded."""

    name: str  # as the user sees it: the CLI flag and, where it differs, the Python keyword
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    hint: str = ""  # what to do about it, appended to the message

    def describe(self) -> str:
        lo, hi = _show(self.lo), _show(self.hi)
        if self.lo is not None and self.hi is not None and self.lo_open and self.hi_open:
            return f"strictly between {lo} and {hi}"
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return "finite"


def _show(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# The ranges. Keys are the Python names; `name` is what messages say.
RANGES: dict[str, Bounds] = {
    # training and fine-tuning (TrainRecipe, fit)
    "epochs": Bounds("epochs (--epochs)", 0, 100_000, integer=True),
    "lr": Bounds("learning rate (--lr)", 0, 10, lo_open=True,
                 hint="typical values are 1e-4 .. 0.1"),
    "weight_decay": Bounds("weight decay (--weight-decay)", 0, 1),
    "label_smoothing": Bounds("label smoothing (--label-smoothing)", 0, 1, hi_open=True),
    "batch_size": Bounds("batch size (--batch-size)", 1, 65_536, integer=True),
    "seed": Bounds("seed (--seed, --prune-seed)", 0, MAX_SEED, integer=True),
    "distill_weight": Bounds("distillation weight", 0, 1, lo_open=True),
    "temperature": Bounds("distillation temperature", 0, 100, lo_open=True),
    # models
    "width_mult": Bounds("width multiplier (--width-mult)", 0, 4, lo_open=True,
                         hint="MobileNetV2 is built for 0.35 .. 1.4"),
    "input_size": Bounds("input size", 1, 4096, integer=True),
    # pruning (configs, Schedule, PruneJob)
    "target": Bounds("pruning target (--target)", 0, 1, lo_open=True, hi_open=True,
                     hint="0.9 = remove 90%"),
    "max_layer_sparsity": Bounds("max_layer_sparsity (--max-layer-sparsity)", 0, 1,
                                 lo_open=True, hi_open=True, hint="1.0 would allow emptying a layer"),
    "round_to": Bounds("round_to (--round-to)", 1, 1024, integer=True),
    "min_channels": Bounds("min_channels (--min-channels)", 1, 4096, integer=True),
    "tolerance": Bounds("tolerance", 0, 0.1, lo_open=True, hi_open=True),
    "num_batches": Bounds("num_batches (--taylor-batches)", 1, 10_000, integer=True),
    "steps": Bounds("pruning steps (--steps)", 1, 1000, integer=True),
    "max_drop": Bounds("max drop", 0, None, hint="percentage points of accuracy, --max-drop"),
    "latency_budget_ms": Bounds("latency budget (--latency-budget-ms)", 0, None, lo_open=True),
    "recalib_batches": Bounds("recalibration batches (--recalib-batches)", 0, 100_000, integer=True),
    # export and measurement
    "calibration_images": Bounds("calibration images (--calibration-images)", 1, 1_000_000, integer=True),
    "max_verify_images": Bounds("verification images (--max-verify)", 1, 10_000_000, integer=True),
    "opset": Bounds("ONNX opset (--opset)", 18, 100, integer=True),
    "threads": Bounds("threads (--threads)", 1, 1024, integer=True),
    "budget_s": Bounds("time budget (--budget, seconds)", 0, 3600, lo_open=True),
    "runs": Bounds("timed runs (--runs)", 1, 1_000_000, integer=True),
    "warmup": Bounds("warm-up runs (--warmup)", 0, 1_000_000, integer=True),
    # data (DataOptions)
    "image_size": Bounds("--image-size", 8, 1024, integer=True),
    "val_fraction": Bounds("--val-fraction", 0, 1, hi_open=True),
    "test_fraction": Bounds("test fraction", 0, 1, lo_open=True, hi_open=True),
    "max_per_class": Bounds("--max-per-class", 1, None, integer=True),
}


def check_number(
    value: Any,
    name: str,
    *,
    min: float | None = None,  # noqa: A002 - the keyword reads best at the call site
    max: float | None = None,  # noqa: A002
    min_open: bool = False,
    max_open: bool = False,
    integer: bool = False,
    finite: bool = True,
    hint: str = "",
) -> Any:
    """`value` if it is a number (an integer with `integer`) in range, else EdgepruneError naming
    `name`. Returns ints as int and other reals as float (numpy scalars become Python ones)."""
    bounds = Bounds(name, min, max, min_open, max_open, integer, hint)
    return _check(value, bounds, finite)


def check_option(key: str, value: Any, *, name: str | None = None, optional: bool = False) -> Any:
    """check_number with the range of `key` in RANGES; None passes when `optional`."""
    if value is None and optional:
        return None
    bounds = RANGES[key]
    if name is not None:
        bounds = Bounds(name, bounds.lo, bounds.hi, bounds.lo_open, bounds.hi_open, bounds.integer, bounds.hint)
    return _check(value, bounds, True)


def _check(value: Any, b: Bounds, finite: bool) -> Any:
    kind = "an integer" if b.integer else "a number"
    if isinstance(value, bool) or not isinstance(value, Real) or (b.integer and not isinstance(value, Integral)):
        raise EdgepruneError(f"{b.name} must be {kind} {b.describe()}, got {value!r}")
    value = int(value) if isinstance(value, Integral) else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        if finite or math.isnan(value):
            raise EdgepruneError(f"{b.name} must be a finite number {b.describe()}, got {value}")
    too_low = b.lo is not None and (value <= b.lo if b.lo_open else value < b.lo)
    too_high = b.hi is not None and (value >= b.hi if b.hi_open else value > b.hi)
    if too_low or too_high:
        hint = f" ({b.hint})" if b.hint else ""
        raise EdgepruneError(f"{b.name} must be {b.describe()}, got {value}{hint}")
    return value
