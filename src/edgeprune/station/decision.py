"""Image -> OK / DEFECT / REVIEW, with the artifact's own preprocessing and class names.

The model's classes map to OK (`ok_classes`) or DEFECT (every other class). An artifact exported
with an operating point (`export --operating-point defect_recall=0.98`) decides by it: DEFECT when
P(OK), the OK classes' probabilities summed, is below the threshold chosen on validation images
for the escape rate the line accepts; without one, the top-1 class decides. A probability of the
decided class below `review_below` routes the part to a person (REVIEW). With a `fallback_model` (a larger, more
accurate model) an uncertain part is first re-checked by it, and goes to a person only when the
fallback is uncertain too: the cascade keeps the fast model on the conveyor's pace and the slow
one for the few hard parts.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

from edgeprune.errors import EdgepruneError
from edgeprune.runtime import Classifier, softmax
from edgeprune.outputs import file_sha256
from edgeprune.runtime.preprocess import decode_image, normalize, to_rgb_resized


@dataclass(frozen=True)
class Verdict:
    decision: str  # OK | DEFECT | REVIEW | ERROR
    predicted_class: str | None
    probability: float | None
    model_sha256: str | None  # the model that made the call (the fallback's when it decided)
    error: str | None = None
    decode_ms: float = 0.0  # where the time went (the fallback's second call included)
    infer_ms: float = 0.0
    # The primary model's decoded input and largest probability: the drift monitor's inputs
    # (the reference was recorded on the primary model, so never the fallback's).
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    top_probability: float | None = None


class LoadedModel:
    """A Classifier with its file's sha256 (what the log records per decision)."""

    def __init__(self, path: str | Path, *, runtime: str = "onnxruntime", threads: int = 1):
        self.path = Path(path)
        self.classifier = Classifier(self.path, runtime=runtime, threads=threads)
        self.sha256 = file_sha256(self.path)

    @property
    def class_names(self) -> list[str]:
        return self.classifier.class_names

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Softmax over the classes for one decoded uint8 (3, S, S) image."""
        meta = self.classifier.metadata
        x = normalize(image[None], meta.mean, meta.std, meta.scale)
        return softmax(self.classifier.predict(x))[0]


def resolve_ok_classes(model: LoadedModel, ok_classes: Sequence[str] | None) -> tuple[str, ...]:
    """The configured OK classes, else those the artifact's operating point was chosen for.
    Neither: refuse, naming the model's classes, since no guess fits every line's class names."""
    if ok_classes is not None:
        return tuple(ok_classes)
    point = model.classifier.metadata.operating_point
    if point is not None:
        return tuple(point.ok_classes)
    names = model.class_names
    raise EdgepruneError(
        f"which classes pass? {model.path.name} has classes {', '.join(names)} and no operating point "
        "to take its OK classes from: set ok_classes = [...] in station.toml or pass --ok-classes "
        "(comma-separated), or export the model with --operating-point and --ok-class")


def check_ok_classes(model: LoadedModel, ok_classes: Sequence[str]) -> None:
    names = model.class_names
    point = model.classifier.metadata.operating_point
    if point is not None and set(point.ok_classes) != set(ok_classes):
        raise EdgepruneError(
            f"{model.path.name}'s operating point ({point.target}) was chosen with OK classes "
            f"{', '.join(point.ok_classes)}, but ok_classes is {', '.join(ok_classes)}: set ok_classes to "
            "match, or export the model again with the station's --ok-class")
    unknown = [c for c in ok_classes if c not in names]
    if unknown:
        raise EdgepruneError(
            f"ok_classes names {', '.join(map(repr, unknown))}, which {model.path.name} does not "
            f"know: its classes are {', '.join(names)}"
        )
    if set(ok_classes) >= set(names):
        raise EdgepruneError(f"ok_classes covers every class of {model.path.name} ({', '.join(names)}): "
                             "nothing could ever be a DEFECT")


class Decider:
    """The decision rule over a primary model and an optional fallback."""

    def __init__(self, model: LoadedModel, ok_classes: Sequence[str], review_below: float,
                 fallback: LoadedModel | None = None):
        check_ok_classes(model, ok_classes)
        if fallback is not None:
            check_ok_classes(fallback, ok_classes)
        self.model = model
        self.fallback = fallback
        self.ok_classes = frozenset(ok_classes)
        self.review_below = review_below

    def _call(self, model: LoadedModel, image: np.ndarray) -> tuple[str, float, float]:
        """(the class decided, its probability, the largest probability): the top-1 class, or
        under the artifact's operating point the likeliest class of the side P(OK) falls on."""
        probs = model.probabilities(image)
        point = model.classifier.metadata.operating_point
        if point is not None:
            names = model.class_names
            ok = np.array([n in self.ok_classes for n in names])
            side = ok if float(probs[ok].sum()) >= point.ok_threshold else ~ok
            index = int(np.where(side, probs, -1.0).argmax())
        else:
            index = int(probs.argmax())
        return model.class_names[index], float(probs[index]), float(probs.max())

    def decide(self, item: Frame) -> Verdict:
        """The verdict for one image (the file's bytes or a camera frame); a bad image is ERROR."""
        model = self.model
        clock = [time.perf_counter(), 0.0, 0.0]  # last mark, decode ms, infer ms

        def lap(slot: int) -> None:
            now = time.perf_counter()
            clock[slot] += (now - clock[0]) * 1000.0
            clock[0] = now

        try:
            image = primary_image = decode_frame(item, model.classifier.input_size)
            lap(1)
            label, prob, top = self._call(model, image)
            lap(2)
            if prob < self.review_below and self.fallback is not None:
                model = self.fallback
                image = decode_frame(item, model.classifier.input_size)
                lap(1)
                label, prob, _ = self._call(model, image)
                lap(2)
        except EdgepruneError as exc:
            return Verdict("ERROR", None, None, model.sha256, str(exc), clock[1], clock[2])
        if prob < self.review_below:
            decision = "REVIEW"
        else:
            decision = "OK" if label in self.ok_classes else "DEFECT"
        return Verdict(decision, label, prob, model.sha256, None, clock[1], clock[2], primary_image, top)


Frame = Union[bytes, np.ndarray]


def decode_frame(item: Frame, size: int) -> np.ndarray:
    """An image file's bytes (read once: hashed and decoded from the same bytes, so a file
    rewritten in between cannot be logged under the other version's hash) or a camera frame
    -> uint8 (3, size, size), by the runtime's one decoding rule."""
    if isinstance(item, np.ndarray):
        return decode_image(item, size)
    try:
        with Image.open(io.BytesIO(item)) as image:
            return to_rgb_resized(image, size)
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, ...
        raise EdgepruneError(f"not a readable image: {exc}") from None
