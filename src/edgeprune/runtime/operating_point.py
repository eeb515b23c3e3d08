"""The operating point: where an inspection line turns P(OK) into OK or DEFECT.

Top-1 is no decision rule a line uses. A line sets the escape rate it can live with (defects
passed as OK) and pays for it in false rejects (good parts thrown out). With the OK classes'
probability summed, P(OK), a part is a DEFECT when P(OK) < `ok_threshold`; raising the threshold
catches more defects and rejects more good parts.

`choose_operating_point` picks the threshold on the *validation* split for a defect-recall target
(`defect_recall=0.98`: at least 98 % of the validation defects rejected, with the fewest false
rejects that allows) or takes a fixed `ok_threshold=`; `export --operating-point` stores the result
in the artifact's metadata (`edgeprune.operating_point`), and `bench` and the station apply it.
`decision_figures` gives what a threshold achieves on other images (the test split): defect recall
and false-reject rate, both with their counts, so a reader sees how many images a point is.

Torch-free: the station uses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError

KINDS = ("defect_recall", "ok_threshold")


@dataclass(frozen=True)
class OperatingPoint:
    ok_classes: tuple[str, ...]
    ok_threshold: float  # DEFECT when P(OK) < ok_threshold
    target: str  # how it was chosen: "defect_recall=0.98" or "ok_threshold=0.5"
    chosen_on: str | None = None  # e.g. "validation split of <data>, 140 images (42 defects)"
    val_defect_recall: float | None = None
    val_false_reject_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["ok_classes"] = list(self.ok_classes)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "the model") -> OperatingPoint:
        try:
            point = cls(ok_classes=tuple(str(c) for c in values["ok_classes"]),
                        ok_threshold=float(values["ok_threshold"]), target=str(values["target"]),
                        chosen_on=values.get("chosen_on"),
                        val_defect_recall=values.get("val_defect_recall"),
                        val_false_reject_rate=values.get("val_false_reject_rate"))
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgepruneError(f"{source}: its operating point is malformed ({exc!r})") from None
        if not (math.isfinite(point.ok_threshold) and 0.0 <= point.ok_threshold <= 1.0) or not point.ok_classes:
            raise EdgepruneError(f"{source}: operating point threshold {point.ok_threshold} outside [0, 1] "
                                 "or no OK class")
        return point

    def is_defect(self, p_ok: np.ndarray) -> np.ndarray:
        return np.asarray(p_ok) < self.ok_threshold


def parse_target(text: str) -> tuple[str, float]:
    """"defect_recall=0.98" or "ok_threshold=0.7" -> (kind, value), checked."""
    kind, sep, value = text.partition("=")
    kind = kind.strip()
    if not sep or kind not in KINDS:
        raise EdgepruneError(f"operating point {text!r}: write defect_recall=R (e.g. 0.98, chosen on the "
                             "validation split) or ok_threshold=T (a fixed threshold on P(OK))")
    try:
        number = float(value)
    except ValueError:
        raise EdgepruneError(f"operating point {text!r}: {value.strip()!r} is not a number") from None
    low_open = kind == "defect_recall"
    if not math.isfinite(number) or not (0 < number <= 1 if low_open else 0 <= number <= 1):
        raise EdgepruneError(f"operating point {text!r}: {kind} must be in "
                             f"{'(0, 1]' if low_open else '[0, 1]'}")
    return kind, number


def ok_probability(probs: np.ndarray, class_names: Sequence[str], ok_classes: Sequence[str]) -> np.ndarray:
    """P(OK) per image: the softmax probabilities of the OK classes summed."""
    unknown = [c for c in ok_classes if c not in class_names]
    if unknown or not ok_classes:
        raise EdgepruneError(f"OK class(es) {', '.join(map(repr, unknown)) or '(none)'} not among the "
                             f"model's classes {', '.join(class_names)}")
    if set(ok_classes) >= set(class_names):
        raise EdgepruneError("the OK classes cover every class: nothing could ever be a DEFECT")
    index = [list(class_names).index(c) for c in ok_classes]
    return np.asarray(probs, dtype=np.float64)[:, index].sum(axis=1)


@dataclass(frozen=True)
class DecisionFigures:
    defect_recall: float | None  # defects rejected / defects (None without defects)
    false_reject_rate: float | None  # OK parts rejected / OK parts (None without OK parts)
    defects: int
    defects_caught: int
    oks: int
    false_rejects: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decision_figures(p_ok: np.ndarray, is_defect: np.ndarray, ok_threshold: float) -> DecisionFigures:
    p_ok, truth = np.asarray(p_ok, dtype=np.float64), np.asarray(is_defect, dtype=bool)
    said_defect = p_ok < ok_threshold
    defects, oks = int(truth.sum()), int((~truth).sum())
    caught, false_rejects = int((said_defect & truth).sum()), int((said_defect & ~truth).sum())
    return DecisionFigures(caught / defects if defects else None,
                           false_rejects / oks if oks else None, defects, caught, oks, false_rejects)


def threshold_for_recall(p_ok: np.ndarray, is_defect: np.ndarray, recall: float) -> float:
    """The lowest threshold rejecting at least `recall` of the defects (the fewest false rejects
    for that recall): halfway between the k-th lowest defect P(OK) and the next higher P(OK) of
    any image, so the images at the boundary are not decided by rounding."""
    p_ok, truth = np.asarray(p_ok, dtype=np.float64), np.asarray(is_defect, dtype=bool)
    defect_scores = np.sort(p_ok[truth])
    if len(defect_scores) == 0:
        raise EdgepruneError("no defect image to choose a defect-recall operating point on")
    k = math.ceil(recall * len(defect_scores) - 1e-9)
    kth = defect_scores[max(k, 1) - 1]
    above = p_ok[p_ok > kth]
    upper = float(above.min()) if len(above) else 1.0
    return float(min(1.0, (kth + upper) / 2 if upper > kth else np.nextafter(kth, 2.0)))


def choose_operating_point(p_ok: np.ndarray, is_defect: np.ndarray, target: str, *,
                           ok_classes: Sequence[str], chosen_on: str | None = None) -> OperatingPoint:
    """An OperatingPoint from validation scores for a target text (see `parse_target`)."""
    kind, value = parse_target(target)
    threshold = value if kind == "ok_threshold" else threshold_for_recall(p_ok, is_defect, value)
    figures = decision_figures(p_ok, is_defect, threshold)
    return OperatingPoint(tuple(ok_classes), threshold, f"{kind}={value:g}", chosen_on,
                          figures.defect_recall, figures.false_reject_rate)


def curves(p_ok: np.ndarray, is_defect: np.ndarray) -> dict[str, Any]:
    """ROC and precision-recall curves for "defect" as the positive class (score 1 - P(OK)), with
    their areas, from scikit-learn (imported here: the station does not need it)."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    score = 1.0 - np.asarray(p_ok, dtype=np.float64)
    truth = np.asarray(is_defect, dtype=bool)
    fpr, tpr, _ = roc_curve(truth, score)
    precision, recall, _ = precision_recall_curve(truth, score)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "roc_auc": float(auc(fpr, tpr)),
            "precision": precision.tolist(), "recall": recall.tolist(),
            "pr_auc": float(auc(recall, precision))}
