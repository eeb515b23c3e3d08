"""Safe model roll-out: a new artifact is checked on this device before it may decide a part.

    rollouts = Rollouts(station, config.dashboard)
    rollouts.upload(data, filename="tiles-pruned.onnx", client="10.0.0.7")  # RolloutRefused or the figures
    rollouts.rollback(client="10.0.0.7")

An upload must parse as ONNX (with the `onnx` package: never judged by its name, never unpickled),
carry edgeprune's metadata and know the station's OK classes. It is then run on the gate set (a
labelled class-folder tree named in the config) on this device, with the station's runtime and
threads: top-1 accuracy, defect recall (parts of a non-OK class called DEFECT) and batch-1 latency
(median of one image at a time). Only a candidate that meets every threshold is switched in,
through Station.swap_model, between two images: no part is dropped, none decided twice, none
decided half by each model. Every attempt, refused or not, is a row of `model_rollouts`.

Accepted files are kept as MODELS_DIR/<sha256>.onnx (named by content, never by the request), so
a rollback returns to the exact bytes that ran before.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import file_sha256
from edgeprune.station.accepted import AcceptedModels
from edgeprune.station.dashboard_config import DashboardConfig
from edgeprune.station.decision import LoadedModel
from edgeprune.station.review import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    action TEXT NOT NULL,          -- upload | rollback
    client TEXT,
    filename TEXT,                 -- as the client named it: recorded, never used as a path
    size_bytes INTEGER,
    sha256 TEXT,
    accepted INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    reason TEXT,
    figures TEXT,                  -- JSON: accuracy, defect_recall, latency, images, device
    previous_sha256 TEXT,
    active_sha256 TEXT             -- the model deciding after the attempt
);
"""


class RolloutRefused(EdgepruneError):
    """A refused upload or rollback: the HTTP status to answer and the measured figures."""

    def __init__(self, message: str, status_code: int, figures: dict | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.figures = figures


@dataclass
class GateFigures:
    images: int
    defect_images: int
    accuracy: float
    defect_recall: float
    latency_ms_p50: float
    latency_ms_p99: float
    device: str
    runtime: str
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_onnx(data: bytes) -> None:
    """Refuse anything that does not parse and check as an ONNX model."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, onnx's ValidationError, ...
        raise RolloutRefused(f"not an ONNX model: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}",
                             415) from None
    if not model.graph.node:  # protobuf parses almost anything into an empty message
        raise RolloutRefused("not an ONNX model: it holds no graph", 415)


def evaluate_gate(model: LoadedModel, gate_set: Path, ok_classes, *, max_per_class: int | None) -> GateFigures:
    """The candidate's figures on the gate set, run here as the station would run it."""
    from edgeprune.runtime.data import load_test_images
    from edgeprune.runtime.measure import cpu_device_label
    from edgeprune.runtime.preprocess import normalize

    clf = model.classifier
    data = load_test_images(gate_set, class_names=model.class_names, image_size=clf.input_size,
                            max_per_class=max_per_class)
    meta = clf.metadata
    inputs = normalize(data.images, meta.mean, meta.std, meta.scale)
    for i in range(min(3, len(inputs))):  # warm-up: the first runs allocate
        clf.predict(inputs[i: i + 1])
    predicted = np.empty(len(inputs), dtype=np.int64)
    latencies = np.empty(len(inputs))
    # Each gate image timed once at batch 1, as on the conveyor, for the p99 the gate needs over
    # real images (runtime.measure's time_callable repeats one input and reports median/p90).
    for i in range(len(inputs)):
        start = time.perf_counter()
        logits = clf.predict(inputs[i: i + 1])
        latencies[i] = (time.perf_counter() - start) * 1000.0
        predicted[i] = int(logits[0].argmax())
    ok = {model.class_names.index(c) for c in ok_classes}
    true_defect = np.array([label not in ok for label in data.labels])
    called_defect = np.array([p not in ok for p in predicted])
    if not true_defect.any():
        raise RolloutRefused(f"the gate set {gate_set} holds no defective parts: defect recall cannot "
                             "be measured; add images of the defect classes", 409)
    return GateFigures(
        images=len(inputs), defect_images=int(true_defect.sum()),
        accuracy=float((predicted == data.labels).mean()),
        defect_recall=float(called_defect[true_defect].mean()),
        latency_ms_p50=float(np.percentile(latencies, 50)), latency_ms_p99=float(np.percentile(latencies, 99)),
        device=cpu_device_label(), runtime=clf.runtime, threads=int(clf.threads or 1))


def gate_failures(figures: GateFigures, config: DashboardConfig) -> list[str]:
    out = []
    if figures.accuracy < config.min_accuracy:
        out.append(f"accuracy {figures.accuracy:.3f} < {config.min_accuracy}")
    if figures.defect_recall < config.min_defect_recall:
        out.append(f"defect recall {figures.defect_recall:.3f} < {config.min_defect_recall}")
    if config.max_latency_ms is not None and figures.latency_ms_p50 > config.max_latency_ms:
        out.append(f"latency {figures.latency_ms_p50:.2f} ms > {config.max_latency_ms} ms")
    return out


class Rollouts:
    def __init__(self, station, config: DashboardConfig, models_dir: str | Path | None = None):
        self.station = station
        self.config = config
        db_path = Path(station.config.db)
        self.models_dir = Path(models_dir) if models_dir else db_path.with_name(db_path.stem + "-models")
        self._db = connect(db_path, SCHEMA)
        self._db_lock = threading.Lock()
        self._busy = threading.Lock()  # one candidate at a time: the gate run is CPU-heavy
        # The accepted model and the rollback stack live in the database: a restart keeps both.
        self._accepted = AcceptedModels(db_path)
        self._history: list[tuple[Path, str]] = self._accepted.stack()  # models that ran before, newest last
        config_model = Path(station.config.model)
        self._config_model = (config_model, file_sha256(config_model) if config_model.is_file() else "")

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
        self._accepted.close()

    # ------------------------------------------------------------------------- the log

    def record(self, action: str, *, client: str | None, accepted: bool, status_code: int,
               reason: str | None = None, filename: str | None = None, size_bytes: int | None = None,
               sha256: str | None = None, figures: dict | None = None, previous_sha256: str | None = None) -> None:
        import json

        active = self.station.current_model().sha256
        with self._db_lock:
            self._db.execute(
                "INSERT INTO model_rollouts (ts, action, client, filename, size_bytes, sha256, accepted, "
                "status_code, reason, figures, previous_sha256, active_sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (time.time(), action, client, (filename or "")[:255] or None, size_bytes, sha256, int(accepted),
                 status_code, reason, json.dumps(figures) if figures else None, previous_sha256, active))

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        import json

        keys = ("id", "ts", "action", "client", "filename", "size_bytes", "sha256", "accepted", "status_code",
                "reason", "figures", "previous_sha256", "active_sha256")
        with self._db_lock:
            rows = self._db.execute(f"SELECT {', '.join(keys)} FROM model_rollouts ORDER BY id DESC LIMIT ?",
                                    (limit,)).fetchall()
        out = [dict(zip(keys, r)) for r in rows]
        for row in out:
            row["accepted"] = bool(row["accepted"])
            row["figures"] = json.loads(row["figures"]) if row["figures"] else None
        return out

    # ------------------------------------------------------------------------- upload and rollback

    def upload(self, data: bytes, *, filename: str | None, client: str | None) -> dict[str, Any]:
        sha = hashlib.sha256(data).hexdigest()
        facts = {"filename": filename, "size_bytes": len(data), "sha256": sha, "client": client}
        if not self._busy.acquire(blocking=False):
            self.record("upload", accepted=False, status_code=409, reason="another roll-out is running", **facts)
            raise RolloutRefused("another model is being checked right now: try again when it is done", 409)
        try:
            return self._upload(data, sha, facts)
        except RolloutRefused as exc:
            self.record("upload", accepted=False, status_code=exc.status_code, reason=str(exc),
                        figures=exc.figures, **facts)
            raise
        finally:
            self._busy.release()

    def _store(self, data: bytes, sha: str) -> Path:
        from edgeprune.outputs import atomic_file

        target = self.models_dir / f"{sha}.onnx"
        if target.is_file() and file_sha256(target) == sha:
            return target
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(target, overwrite=True, what="uploaded model") as work:
            work.write_bytes(data)
        return target

    def _upload(self, data: bytes, sha: str, facts: dict) -> dict[str, Any]:
        check_onnx(data)
        if self.config.gate_set is None:
            raise RolloutRefused("no gate set configured ([dashboard] gate_set): the station never switches "
                                 "to a model it has not checked", 409)
        if not Path(self.config.gate_set).is_dir():
            raise RolloutRefused(f"the gate set {self.config.gate_set} is not a folder", 409)
        previous = self.station.current_model()
        if sha == previous.sha256:
            raise RolloutRefused(f"model {sha[:12]} is already the one running", 409)
        name = f"{facts['filename'] or 'the upload'} ({sha[:12]})"
        kept_before = (self.models_dir / f"{sha}.onnx").is_file()
        path = self._store(data, sha)
        measured: dict[str, Any] = {}

        def gate(candidate: LoadedModel) -> str | None:
            figures = evaluate_gate(candidate, Path(self.config.gate_set), self.station.config.ok_classes,
                                    max_per_class=self.config.gate_max_per_class)
            measured["figures"] = figures
            measured["failed"] = gate_failures(figures, self.config)
            return "; ".join(measured["failed"]) or None

        try:
            new_sha = self.station.swap_model(path, gate=gate)
        except EdgepruneError as exc:  # no metadata, wrong classes, a graph that does not run, the gate
            if not kept_before:  # a refused candidate is not kept (one that ran before stays)
                path.unlink(missing_ok=True)
            if isinstance(exc, RolloutRefused):
                raise
            figures = measured.get("figures")
            message = (f"{name} refused by the gate: {'; '.join(measured['failed'])}" if measured.get("failed")
                       else f"{name} refused: {str(exc).replace(str(path), 'it')}")
            raise RolloutRefused(message, 422, figures.to_dict() if figures else None) from None
        self._history.append((previous.path, previous.sha256))
        self._accepted.push(path, new_sha, (previous.path, previous.sha256), self._config_model)
        figures = measured["figures"].to_dict()
        self.record("upload", accepted=True, status_code=200, figures=figures,
                    previous_sha256=previous.sha256, **facts)
        return {"accepted": True, "sha256": new_sha, "previous_sha256": previous.sha256, "figures": figures,
                "gate": self.gate_thresholds()}

    def rollback(self, *, client: str | None) -> dict[str, Any]:
        with self._busy:
            if not self._history:
                self.record("rollback", client=client, accepted=False, status_code=409,
                            reason="no earlier model on this station")
                raise RolloutRefused("no earlier model to return to on this station", 409)
            path, sha = self._history[-1]
            current = self.station.current_model().sha256

            def same_bytes(candidate: LoadedModel) -> str | None:
                return None if candidate.sha256 == sha else f"{path} changed on disk since it ran ({sha[:12]})"

            try:
                new_sha = self.station.swap_model(path, gate=same_bytes)
            except EdgepruneError as exc:
                self.record("rollback", client=client, accepted=False, status_code=409, reason=str(exc),
                            sha256=sha, previous_sha256=current)
                raise RolloutRefused(str(exc), 409) from None
            self._history.pop()
            self._accepted.pop(self._config_model)
            self.record("rollback", client=client, accepted=True, status_code=200, sha256=new_sha,
                        previous_sha256=current)
            return {"accepted": True, "sha256": new_sha, "previous_sha256": current}

    def gate_thresholds(self) -> dict[str, Any]:
        c = self.config
        return {"gate_set": str(c.gate_set) if c.gate_set else None, "min_accuracy": c.min_accuracy,
                "min_defect_recall": c.min_defect_recall, "max_latency_ms": c.max_latency_ms}
