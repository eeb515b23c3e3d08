"""Input drift: cheap per-image statistics, a reference recorded at export, and a sliding-window
test at the station. numpy only (no torch, no scipy): the station computes the very same figures
on live images that export computed on the validation images.

Per image, on the model's input (uint8 (3, S, S), decoded by the runtime's one rule), reduced by
taking every k-th pixel in each direction so that the side is at most STATS_SIDE (k = ceil(S /
STATS_SIDE); 1 up to 64 px): the cost stays ~ tens of microseconds at 224 px, and striding (not
averaging) keeps pixel noise and the loss of fine edges visible:

    brightness  mean grey level (0..255, grey = 0.299 R + 0.587 G + 0.114 B)
    contrast    standard deviation of the grey levels
    sharpness   variance of the 4-neighbour Laplacian of the grey image (defocus lowers it,
                sensor noise raises it)

and, from the model, `top_probability`: the largest softmax probability of the image.

The reference (`DriftReference`, JSON in the artifact's metadata) keeps, per statistic, the
bin edges at the deciles of the reference images and the count of images per bin, plus a few
quantiles for people to read: a few hundred bytes, never the raw values.

The test is the population stability index over those bins,

    PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i)        (proportions per bin)

computed on the last `window` live images for each statistic; drift is raised when the largest
PSI passes the threshold. PSI is written here with numpy because it needs only the stored bin
counts (the reference keeps no raw values for scipy's two-sample KS test), and it is a sum over
ten bins: incremental per image (one bin index per statistic in, one out). Empty bins are
smoothed by adding half an image to every bin on both sides (otherwise one empty bin makes the
PSI infinite). Under no drift the PSI of a window of W images against N reference images is
about (B - 1) * (1/W + 1/N) on average (B bins): `expected_null_psi` gives it, and a threshold
should sit well above it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError

STATS_SIDE = 64  # statistics on at most 64 x 64 strided pixels of the model's input
STATISTICS = ("brightness", "contrast", "sharpness")  # from the image
TOP_PROBABILITY = "top_probability"  # from the model
FEATURES = (*STATISTICS, TOP_PROBABILITY)
DEFAULT_BINS = 10
SMOOTHING = 0.5  # images added to every bin, live and reference alike
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
REFERENCE_VERSION = 1
GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def stride_for(side: int) -> int:
    return max(1, math.ceil(side / STATS_SIDE))


def image_statistics(image: np.ndarray) -> tuple[float, float, float]:
    """One uint8 image (3, S, S) -> (brightness, contrast, sharpness), the module docstring's
    definitions. Plain numpy on a strided copy of at most STATS_SIDE x STATS_SIDE pixels: ~0.1 ms
    of CPU at 224 px on a busy 2-core machine (docs/drift.md)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise EdgepruneError(f"image statistics need a uint8 image (3, S, S), got shape {image.shape}")
    k = stride_for(max(image.shape[1], image.shape[2]))
    small = image[:, ::k, ::k].astype(np.float32)
    grey = GREY[0] * small[0] + GREY[1] * small[1] + GREY[2] * small[2]
    if grey.shape[0] >= 3 and grey.shape[1] >= 3:
        lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
        sharpness = float(lap.var())
    else:
        sharpness = 0.0
    return float(grey.mean()), float(grey.std()), sharpness


def batch_statistics(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 3, S, S) -> float64 (N, 3): `image_statistics` of each (the same function
    the station runs, so reference and live figures agree to the last bit)."""
    if images.ndim != 4:
        raise EdgepruneError(f"image statistics need uint8 images (N, 3, S, S), got shape {images.shape}")
    return np.array([image_statistics(image) for image in images], dtype=np.float64).reshape(-1, len(STATISTICS))


@dataclass(frozen=True)
class FeatureBins:
    """One statistic's reference: interior bin edges (B - 1 values, ascending, distinct) and the
    reference images per bin (B counts); a value v falls in bin searchsorted(edges, v, 'right')."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    quantiles: dict[str, float] = field(default_factory=dict)  # for people: p05, p25, p50, p75, p95

    def bin_of(self, value: float) -> int:
        return bisect.bisect_right(self.edges, value)  # = np.searchsorted(edges, value, "right")

    @cached_property
    def proportions(self) -> tuple[float, ...]:
        total = sum(self.counts) + SMOOTHING * len(self.counts)
        return tuple((c + SMOOTHING) / total for c in self.counts)

    @classmethod
    def fit(cls, values: np.ndarray, bins: int = DEFAULT_BINS) -> FeatureBins:
        values = np.asarray(values, dtype=np.float64)
        inner = np.quantile(values, np.arange(1, bins) / bins)
        edges = np.unique(inner)  # a value held by many images (e.g. top probability 1.0) merges bins
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        quantiles = {f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))}
        return cls(tuple(float(e) for e in edges), tuple(int(c) for c in counts), quantiles)

    def to_dict(self) -> dict[str, Any]:
        return {"edges": [round(e, 6) for e in self.edges], "counts": list(self.counts),
                "quantiles": {k: round(v, 6) for k, v in self.quantiles.items()}}

    @classmethod
    def from_dict(cls, value: Any, where: str) -> FeatureBins:
        if not isinstance(value, dict):
            raise EdgepruneError(f"{where} must be a JSON object with edges and counts")
        edges, counts = value.get("edges"), value.get("counts")
        if (not isinstance(edges, list) or not isinstance(counts, list)
                or not all(isinstance(e, (int, float)) and math.isfinite(e) for e in edges)
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
            raise EdgepruneError(f"{where}: edges must be finite numbers and counts non-negative integers")
        if len(counts) != len(edges) + 1 or sum(counts) == 0:
            raise EdgepruneError(f"{where}: needs one count more than edges, and at least one image")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise EdgepruneError(f"{where}: edges must be strictly ascending")
        quantiles = value.get("quantiles") or {}
        return cls(tuple(float(e) for e in edges), tuple(counts),
                   {str(k): float(v) for k, v in quantiles.items() if isinstance(v, (int, float))})


@dataclass(frozen=True)
class DriftReference:
    """What the station compares live images with (`edgeprune.drift_reference` in the metadata)."""

    features: dict[str, FeatureBins]
    images: int
    chosen_on: str  # e.g. "validation split of tiles: 134 images"
    stats_side: int = STATS_SIDE

    @classmethod
    def build(cls, statistics: np.ndarray, top_probability: np.ndarray, *, chosen_on: str,
              bins: int = DEFAULT_BINS) -> DriftReference:
        statistics = np.asarray(statistics, dtype=np.float64)
        top_probability = np.asarray(top_probability, dtype=np.float64)
        if statistics.ndim != 2 or statistics.shape[1] != len(STATISTICS) or len(statistics) != len(top_probability):
            raise EdgepruneError("a drift reference needs (N, 3) statistics and N top probabilities")
        if len(statistics) < 2:
            raise EdgepruneError(f"a drift reference needs at least 2 images, got {len(statistics)}")
        columns = {name: statistics[:, i] for i, name in enumerate(STATISTICS)}
        columns[TOP_PROBABILITY] = top_probability
        return cls({name: FeatureBins.fit(values, bins) for name, values in columns.items()},
                   len(statistics), chosen_on)

    def to_dict(self) -> dict[str, Any]:
        return {"version": REFERENCE_VERSION, "images": self.images, "chosen_on": self.chosen_on,
                "stats_side": self.stats_side, "test": "psi",
                "features": {name: bins.to_dict() for name, bins in self.features.items()}}

    @classmethod
    def from_dict(cls, value: Any, source: str = "the model") -> DriftReference:
        where = f"{source}: metadata edgeprune.drift_reference"
        if not isinstance(value, dict) or not isinstance(value.get("features"), dict):
            raise EdgepruneError(f"{where} must be a JSON object with features")
        if value.get("version") != REFERENCE_VERSION:
            raise EdgepruneError(f"{where}: version {value.get('version')!r} is not one this edgeprune "
                                 f"reads ({REFERENCE_VERSION})")
        if value.get("stats_side") != STATS_SIDE:
            raise EdgepruneError(f"{where}: statistics taken at {value.get('stats_side')!r} px, this "
                                 f"edgeprune takes them at {STATS_SIDE} px: export the model again")
        missing = [f for f in FEATURES if f not in value["features"]]
        if missing:
            raise EdgepruneError(f"{where} lacks {', '.join(missing)}")
        features = {f: FeatureBins.from_dict(value["features"][f], f"{where}.{f}") for f in FEATURES}
        images = value.get("images")
        if not isinstance(images, int) or images < 2:
            raise EdgepruneError(f"{where}: images must be an integer >= 2")
        return cls(features, images, str(value.get("chosen_on", "")))


def psi(live_counts: Sequence[int], reference: FeatureBins) -> float:
    """The population stability index of live bin counts against a reference (smoothed). Plain
    Python over the ~10 bins: numpy's per-call overhead is larger than the sum itself."""
    total = sum(live_counts) + SMOOTHING * len(live_counts)
    out = 0.0
    for count, ref in zip(live_counts, reference.proportions):
        live = (count + SMOOTHING) / total
        out += (live - ref) * math.log(live / ref)
    return out


def expected_null_psi(reference: DriftReference, window: int) -> float:
    """The PSI a window of `window` images drawn like the reference gives on average (the
    largest over the features): the chi-square approximation (B - 1) * (1/W + 1/N)."""
    bins = max(len(f.counts) for f in reference.features.values())
    return (bins - 1) * (1.0 / window + 1.0 / reference.images)


@dataclass(frozen=True)
class DriftCheck:
    """The monitor's state after an image: PSI per feature over the window (None until full)."""

    psi: dict[str, float] | None
    worst: str | None
    raised: bool  # this image raised the alarm


class DriftMonitor:
    """The sliding window at the station: `observe(stats, top_probability)` per image, O(B) work.

    The alarm latches: once the largest PSI passes `threshold` the state is "drift" until
    `acknowledge()`, which also empties the window, so a drift that persists raises the alarm
    again after one more full window."""

    def __init__(self, reference: DriftReference, window: int, threshold: float):
        self.reference = reference
        self.window = int(window)
        self.threshold = float(threshold)
        self._bins = [reference.features[f] for f in FEATURES]
        self._history: deque[tuple[int, ...]] = deque()
        self._counts = [[0] * len(b.counts) for b in self._bins]
        self.alarm = False
        self.raised_at: int | None = None  # images observed when the alarm was raised
        self.observed = 0
        self.last: DriftCheck = DriftCheck(None, None, False)

    @property
    def filled(self) -> int:
        """Images in the window now (the test runs once it holds `window`)."""
        return len(self._history)

    def reset_window(self) -> None:
        self._history.clear()
        for counts in self._counts:
            counts[:] = [0] * len(counts)

    def observe(self, statistics: Sequence[float], top_probability: float) -> DriftCheck:
        values = (*statistics, top_probability)
        bins = tuple(b.bin_of(v) for b, v in zip(self._bins, values))
        self._history.append(bins)
        for counts, index in zip(self._counts, bins):
            counts[index] += 1
        if len(self._history) > self.window:
            for counts, index in zip(self._counts, self._history.popleft()):
                counts[index] -= 1
        self.observed += 1
        if len(self._history) < self.window:
            self.last = DriftCheck(None, None, False)
            return self.last
        values_psi = {f: psi(c, b) for f, c, b in zip(FEATURES, self._counts, self._bins)}
        worst = max(values_psi, key=values_psi.get)
        raised = not self.alarm and values_psi[worst] > self.threshold
        if raised:
            self.alarm = True
            self.raised_at = self.observed
        self.last = DriftCheck(values_psi, worst, raised)
        return self.last

    def acknowledge(self) -> None:
        self.alarm = False
        self.raised_at = None
        self.reset_window()

    def state(self) -> dict[str, Any]:
        """JSON-ready: state, PSI per feature, the worst, the window's fill."""
        return {"state": "drift" if self.alarm else "ok", "psi": self.last.psi, "worst": self.last.worst,
                "threshold": self.threshold, "window": self.window, "window_filled": self.filled,
                "observed": self.observed, "reference_images": self.reference.images,
                "expected_clean_psi": round(expected_null_psi(self.reference, self.window), 4)}
