"""The model registry: every candidate the fleet may run, its figures on the frozen acceptance
set and every state it went through, in the fleet database (SQLite or PostgreSQL, SQLAlchemy 2
Core, like store.py; its own tables, created beside the store's).

    registry = ModelRegistry(engine, models_dir)
    model = registry.register(Path("cand.onnx"), acceptance=Path("acceptance/"), ok_classes=("good",),
                              parent="3f2a...", study_run="runs/s1", data_fingerprint="...", fleet_labels=120)
    registry.set_state(model.sha256, "shadow", "roll-out 4 started")
    registry.models()       # newest first
    registry.states(sha)    # every change: time, state, reason, figures

States: candidate (registered) -> shadow -> canary -> rolled-out, or rejected (with the figures
that rejected it). The registered file is copied to MODELS_DIR/<sha256>.onnx (named by content),
so a roll-out sends the exact bytes that were judged, whatever happens to the original.

The acceptance set is a labelled class-folder tree no candidate ever trains on. A model is judged
there the way a station decides (edgeprune.runtime only, no torch): the artifact's operating
point when it carries one (P(OK) against its threshold), else the top-1 class; DEFECT is every
class outside the OK classes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, Text, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file, file_sha256

STATES = ("candidate", "shadow", "canary", "rolled-out", "rejected")

registry_metadata = MetaData()

models = Table(
    "models", registry_metadata,
    Column("sha256", String(64), primary_key=True),
    Column("file", Text, nullable=False),  # MODELS_DIR/<sha256>.onnx
    Column("name", Text),  # the registered file's name, for people
    Column("parent_sha256", String(64)),
    Column("study_run", Text),
    Column("data_fingerprint", Text),
    Column("fleet_labels", Integer),
    Column("class_names", Text, nullable=False),  # JSON list
    Column("ok_classes", Text, nullable=False),  # JSON list
    Column("acceptance_set", Text, nullable=False),
    Column("acceptance_images", Integer, nullable=False),
    Column("acceptance_defects", Integer, nullable=False),
    Column("accuracy", Float, nullable=False),
    Column("balanced_accuracy", Float, nullable=False),
    Column("defect_recall", Float, nullable=False),
    Column("false_reject_rate", Float),
    Column("latency_ms_p50", Float, nullable=False),
    Column("latency_device", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("registered_ts", Float, nullable=False),
    Column("state_ts", Float, nullable=False),
)
model_states = Table(
    "model_states", registry_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("figures", Text),  # JSON
)


@dataclass(frozen=True)
class AcceptanceFigures:
    images: int
    defects: int
    accuracy: float  # top-1 class against the folder's label
    balanced_accuracy: float  # mean recall over the classes present
    defect_recall: float  # defective parts decided DEFECT
    false_reject_rate: float | None  # good parts decided DEFECT
    latency_ms_p50: float  # batch 1, one image at a time, on this host
    device: str


@dataclass(frozen=True)
class RegisteredModel:
    sha256: str
    file: str
    name: str | None
    parent_sha256: str | None
    study_run: str | None
    data_fingerprint: str | None
    fleet_labels: int | None
    class_names: list[str]
    ok_classes: list[str]
    acceptance_set: str
    acceptance_images: int
    acceptance_defects: int
    accuracy: float
    balanced_accuracy: float
    defect_recall: float
    false_reject_rate: float | None
    latency_ms_p50: float
    latency_device: str
    size_bytes: int
    state: str
    registered_ts: float
    state_ts: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StateChange:
    ts: float
    state: str
    reason: str
    figures: dict[str, Any] | None


def evaluate_acceptance(path: Path, acceptance: Path, ok_classes: Sequence[str] | None = None, *,
                        max_per_class: int | None = None) -> tuple[AcceptanceFigures, list[str], list[str]]:
    """(figures, the model's class names, the OK classes used) of `path` on the acceptance tree."""
    from edgeprune.runtime import Classifier, softmax
    from edgeprune.runtime.data import load_test_images
    from edgeprune.runtime.measure import cpu_device_label
    from edgeprune.runtime.operating_point import ok_probability
    from edgeprune.runtime.preprocess import normalize

    clf = Classifier(path)
    names = list(clf.class_names)
    point = clf.metadata.operating_point
    if ok_classes is None:
        if point is None:
            raise EdgepruneError(f"{path.name} carries no operating point: name the OK classes "
                                 "(--ok-classes or the fleet config's ok_classes)")
        ok_classes = list(point.ok_classes)
    ok_classes = list(ok_classes)
    unknown = [c for c in ok_classes if c not in names]
    if unknown or set(ok_classes) >= set(names):
        raise EdgepruneError(f"ok classes {', '.join(ok_classes)} do not fit {path.name}'s classes ({', '.join(names)})")
    if not Path(acceptance).is_dir():
        raise EdgepruneError(f"the acceptance set {acceptance} is not a folder")
    data = load_test_images(acceptance, class_names=names, image_size=clf.input_size, max_per_class=max_per_class)
    meta = clf.metadata
    inputs = normalize(data.images, meta.mean, meta.std, meta.scale)
    for i in range(min(3, len(inputs))):  # warm-up
        clf.predict(inputs[i: i + 1])
    probs = np.empty((len(inputs), len(names)), dtype=np.float64)
    latencies = np.empty(len(inputs))
    for i in range(len(inputs)):  # batch 1, as on the line
        start = time.perf_counter()
        logits = clf.predict(inputs[i: i + 1])
        latencies[i] = (time.perf_counter() - start) * 1000.0
        probs[i] = softmax(logits)[0]
    ok_mask = np.array([n in ok_classes for n in names])
    if point is not None:
        called_defect = point.is_defect(ok_probability(probs, names, ok_classes))
    else:
        called_defect = ~ok_mask[probs.argmax(axis=1)]
    predicted = probs.argmax(axis=1)
    true_defect = ~ok_mask[data.labels]
    if not true_defect.any():
        raise EdgepruneError(f"the acceptance set {acceptance} holds no defective parts: defect recall "
                             "cannot be measured")
    recalls = [float((predicted[data.labels == c] == c).mean()) for c in np.unique(data.labels)]
    figures = AcceptanceFigures(
        images=len(inputs), defects=int(true_defect.sum()), accuracy=float((predicted == data.labels).mean()),
        balanced_accuracy=float(np.mean(recalls)), defect_recall=float(called_defect[true_defect].mean()),
        false_reject_rate=float(called_defect[~true_defect].mean()) if (~true_defect).any() else None,
        latency_ms_p50=float(np.median(latencies)), device=cpu_device_label())
    return figures, names, ok_classes


def _row_to_model(row) -> RegisteredModel:
    values = dict(row._mapping)
    values["class_names"] = json.loads(values["class_names"])
    values["ok_classes"] = json.loads(values["ok_classes"])
    return RegisteredModel(**values)


class ModelRegistry:
    def __init__(self, engine: Engine, models_dir: str | Path):
        self.engine = engine
        self.models_dir = Path(models_dir)
        try:
            registry_metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise EdgepruneError(f"cannot create the model registry's tables: {getattr(exc, 'orig', exc)}") from None

    def register(self, path: str | Path, *, acceptance: str | Path, ok_classes: Sequence[str] | None = None,
                 parent: str | None = None, study_run: str | None = None, data_fingerprint: str | None = None,
                 fleet_labels: int | None = None, reason: str = "registered by hand",
                 max_per_class: int | None = None) -> RegisteredModel:
        """Judge `path` on the acceptance set, keep a copy by content, record it as a candidate.
        A model already registered is returned as it is (its figures and state unchanged)."""
        from edgeprune.runtime.metadata import read_metadata

        path = Path(path)
        if not path.is_file():
            raise EdgepruneError(f"model not found: {path}")
        if path.suffix.lower() != ".onnx":
            raise EdgepruneError(f"{path.name}: the fleet rolls out ONNX files (.onnx)")
        sha = file_sha256(path)
        found = self.find(sha)
        if found is not None:
            return found
        if parent is not None:
            parent = self.resolve(parent).sha256
        if fleet_labels is not None and (not isinstance(fleet_labels, int) or fleet_labels < 0):
            raise EdgepruneError(f"fleet_labels must be a count >= 0, got {fleet_labels!r}")
        if data_fingerprint is None:  # the artifact's recorded split, when it carries one
            split = read_metadata(path).split
            data_fingerprint = split.get("fingerprint") if split else None
        figures, names, ok = evaluate_acceptance(path, Path(acceptance), ok_classes, max_per_class=max_per_class)
        target = self.models_dir / f"{sha}.onnx"
        if not (target.is_file() and file_sha256(target) == sha):
            self.models_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(target, overwrite=True, what="registered model") as work:
                work.write_bytes(path.read_bytes())
        if file_sha256(target) != sha:
            raise EdgepruneError(f"{path} changed while it was registered: register it again")
        now = time.time()
        row = dict(sha256=sha, file=str(target), name=path.name, parent_sha256=parent, study_run=study_run,
                   data_fingerprint=data_fingerprint, fleet_labels=fleet_labels, class_names=json.dumps(names),
                   ok_classes=json.dumps(ok), acceptance_set=str(Path(acceptance).resolve()),
                   acceptance_images=figures.images, acceptance_defects=figures.defects,
                   accuracy=figures.accuracy, balanced_accuracy=figures.balanced_accuracy,
                   defect_recall=figures.defect_recall, false_reject_rate=figures.false_reject_rate,
                   latency_ms_p50=figures.latency_ms_p50, latency_device=figures.device,
                   size_bytes=target.stat().st_size, state="candidate", registered_ts=now, state_ts=now)
        with self.engine.begin() as conn:
            conn.execute(models.insert().values(**row))
            conn.execute(model_states.insert().values(sha256=sha, ts=now, state="candidate", reason=reason,
                                                      figures=json.dumps(asdict(figures))))
        return self.find(sha)

    def find(self, sha: str) -> RegisteredModel | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(models).where(models.c.sha256 == sha)).first()
        return _row_to_model(row) if row else None

    def resolve(self, ref: str | Path) -> RegisteredModel:
        """A registered model by sha256 (or a unique prefix of 6+ characters) or by a file's bytes."""
        ref_s = str(ref)
        if Path(ref_s).is_file():
            found = self.find(file_sha256(Path(ref_s)))
            if found is None:
                raise EdgepruneError(f"{ref_s} is not registered: `edgeprune fleet register {ref_s} --acceptance DIR` first")
            return found
        if len(ref_s) >= 6 and all(c in "0123456789abcdef" for c in ref_s.lower()):
            with self.engine.connect() as conn:
                rows = conn.execute(select(models).where(models.c.sha256.like(ref_s.lower() + "%"))).all()
            if len(rows) == 1:
                return _row_to_model(rows[0])
            if len(rows) > 1:
                raise EdgepruneError(f"{ref_s} names {len(rows)} registered models: give more of the sha256")
        raise EdgepruneError(f"no registered model {ref_s!r} (a file path or a sha256 prefix)")

    def models(self, limit: int | None = None) -> list[RegisteredModel]:
        """Newest first; the newest `limit` only when given (the fleet page polls this)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(models).order_by(models.c.registered_ts.desc()).limit(limit)).all()
        return [_row_to_model(r) for r in rows]

    def states(self, sha: str) -> list[StateChange]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(model_states).where(model_states.c.sha256 == sha)
                                .order_by(model_states.c.id)).all()
        return [StateChange(r.ts, r.state, r.reason, json.loads(r.figures) if r.figures else None) for r in rows]

    def set_state(self, sha: str, state: str, reason: str, figures: dict[str, Any] | None = None,
                  *, conn=None) -> None:
        """A state change, stored with its time and reason (in the caller's transaction if given)."""
        if state not in STATES:
            raise ValueError(f"unknown model state {state!r}")
        now = time.time()

        def write(c) -> None:
            c.execute(update(models).where(models.c.sha256 == sha).values(state=state, state_ts=now))
            c.execute(model_states.insert().values(sha256=sha, ts=now, state=state, reason=reason,
                                                   figures=json.dumps(figures) if figures is not None else None))

        if conn is not None:
            write(conn)
        else:
            with self.engine.begin() as c:
                write(c)


def models_dir_for(data: Path) -> Path:
    """Where the registry keeps its files: beside the labelled images (DATA-models/)."""
    data = Path(data)
    return data.with_name(data.name + "-models")
