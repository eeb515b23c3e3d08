"""The Station: images in, decisions logged, signals to the PLC, summaries upstream.

    with Station(load_config("station.toml")) as station:
        result = station.run()      # until the source ends, --max-images, or SIGINT/SIGTERM

The main loop runs in the calling thread: take the next image, skip it if the log already holds
it (same path and sha256), decide, log (with its pending PLC signal and the source's position, in
one transaction), wake the PLC forwarder. The forwarder (plc.py) and the MQTT publisher (mqtt.py)
run in their own threads, so a PLC or broker outage never slows the conveyor.

For the dashboard (issue 12) the Station exposes what a web layer needs, all thread-safe:
`status()` (a JSON-ready snapshot), `decisions(since, limit)`, `review_queue(since, limit)` and
`swap_model(path, gate=...)`, which loads and checks the new model beside the running one and
swaps it between two images, so no image is decided by half of each. They keep answering after
`run()` returns, until `close()`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.station.accepted import start_model
from edgeprune.station.config import StationConfig
from edgeprune.station.decision import Decider, LoadedModel, check_ok_classes, resolve_ok_classes
from edgeprune.station.log import Decision, DecisionLog
from edgeprune.station.mqtt import MqttPublisher, pick_samples, summarize
from edgeprune.station.plc import Forwarder, open_adapter
from edgeprune.station.sources import open_source
from edgeprune.station.timings import HostLoad, StageTimes
from edgeprune.station.upload import Uploader
from edgeprune.runtime.drift import DriftMonitor, expected_null_psi, image_statistics

RECENT = 10_000  # latencies kept for the status percentiles
DRIFT_STATE_KEY = "drift_alarm_since"  # station_state: a latched drift alarm outlives a restart


@dataclass
class RunResult:
    decided: int  # new decisions in this run
    skipped: int  # images the log already held
    counts: dict[str, int]  # this run's decisions by kind
    pending_left: int  # PLC signals still pending at exit (delivered first at the next start)
    ended_by: str  # "max_images" | "source ended" | "signal" | "stop"
    elapsed_s: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    plc_latency_ms_p50: float | None  # image arrival to PLC acknowledgement
    plc_latency_ms_p99: float | None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # timings.StageTimes.summary()
    host: dict[str, Any] = field(default_factory=dict)  # load average, CPU steal over the run
    mqtt: dict[str, Any] | None = None  # the broker link at exit (MqttPublisher.link())
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(values, q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, dtype=float), q)) if len(values) else None


class Station:
    def __init__(self, config: StationConfig, *, on_progress: Callable[[dict], None] | None = None,
                 progress_every_s: float = 10.0):
        # A model accepted through the dashboard (upload or rollback) outlives a restart.
        self.start_model = start_model(config.db, config.model)
        model = LoadedModel(self.start_model.path, runtime=config.runtime, threads=config.threads)
        # Resolved once against the model it starts with: the dashboard, the shadow and every
        # later swap check candidates against these classes.
        self.config = config = config.replace(ok_classes=resolve_ok_classes(model, config.ok_classes))
        fallback = (LoadedModel(config.fallback_model, runtime=config.runtime, threads=config.threads)
                    if config.fallback_model is not None else None)
        self._decider = Decider(model, config.ok_classes, config.review_below, fallback)
        self.log = DecisionLog(config.db, config.db_synchronous)
        try:
            self.source = open_source(config.source, rate=config.rate, log=self.log)
            self.forwarder = None
            if config.plc is not None:
                self.forwarder = Forwarder(self.log, open_adapter(config.plc, config.modbus, config.opcua),
                                           retry_min_s=config.retry_min_s, retry_max_s=config.retry_max_s,
                                           on_sent=self._on_sent)
            identity = {"station_id": config.station_id, "line": config.line}
            self.mqtt = (MqttPublisher(config.mqtt, config.mqtt_interval_s, self._mqtt_message,
                                       client_id=f"edgeprune-station-{config.station_id}", identity=identity)
                         if config.mqtt is not None else None)
            self.uploader = (Uploader(config.db, config.mqtt, station_id=config.station_id, line=config.line,
                                      interval_s=config.upload_interval_s, batch=config.upload_batch,
                                      ack_timeout_s=config.upload_ack_timeout_s)
                             if config.mqtt is not None and config.upload else None)
        except BaseException:
            self.log.close()
            raise
        self.on_progress = on_progress
        self.progress_every_s = progress_every_s
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()
        self._arrivals: dict[int, tuple[float, float]] = {}  # row id -> (arrival, logged)
        self._latency_ms: deque[float] = deque(maxlen=RECENT)
        self._plc_latency_ms: deque[float] = deque(maxlen=RECENT)
        self._run_counts = {d: 0 for d in ("OK", "DEFECT", "REVIEW", "ERROR")}
        self._decided = 0
        self._skipped = 0
        self._judged = 0
        self._correct = 0
        self._started: float | None = None
        self._mqtt_since = 0
        self._stages = StageTimes()
        self._stage_mark = self._stages.mark()  # the MQTT interval's start
        # CPU steal is "since the previous sample": one sampler per reader, so the status polls
        # do not shorten the MQTT interval's or the run's window.
        self._host = {reader: HostLoad() for reader in ("run", "mqtt", "status")}
        self.warnings = _class_warnings(self.source, model)
        self._drift_lock = threading.Lock()  # the dashboard's acknowledgement comes from another thread
        self._drift_since: float | None = None  # when the alarm was raised (time.time())
        self._drift, why = _drift_monitor(config, model)
        self._drift_off = why or 'drift_action = "off"'  # why there is no drift watch
        if why and config.drift_action == "review":  # asked for, and impossible: say so at start
            self.warnings.append(why)
        self.warnings += _drift_noise_warning(self._drift)
        latched = self.log.get_state(DRIFT_STATE_KEY)
        if latched and self._drift is not None:  # raised before a restart and not acknowledged
            self._drift.alarm = True
            self._drift_since = float(latched)
        self.state = "ready"

    # ------------------------------------------------------------------------- main loop

    def stop(self) -> None:
        """Ask the loop to end after the image in flight (thread- and signal-safe)."""
        self._stop.set()

    def close(self) -> None:
        """Close the database (status and queries keep working until then, after run() too)."""
        self.log.close()

    def __enter__(self) -> Station:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self) -> RunResult:
        cfg = self.config
        dashboard = None
        if cfg.http is not None:  # served while the loop runs, from a process of its own
            from edgeprune.station.dashboard_process import DashboardProcess

            try:
                dashboard = DashboardProcess(self)  # a busy port fails here, before any work
            except BaseException:
                self.log.close()
                raise
        for warning in self.warnings:
            self.log.alarm("source", warning)
        self._started = time.perf_counter()
        self._mqtt_since = self.log.last_id()
        ended_by = "source ended"
        restore = self._install_signal_handlers()
        self.state = "running"
        if self.forwarder is not None:
            self.forwarder.start()  # pending signals of an earlier run go first
        if self.mqtt is not None:
            self.mqtt.start()
        if self.uploader is not None:
            self.uploader.start()  # resends from the cursor what the fleet has not confirmed
        last_progress = time.perf_counter()
        pending_left = 0
        try:
            ready = time.perf_counter()  # the loop's end of the previous image
            for item in self.source.items(self._stop):
                got = time.perf_counter()
                self._stages.add("wait", (item.arrival - ready) * 1000.0)
                self._stages.add("read", (got - item.arrival) * 1000.0)
                if self.log.seen(item.path, item.sha256):
                    self._skipped += 1
                else:
                    self._decide(item, seen_ms=(time.perf_counter() - got) * 1000.0)
                if cfg.max_images is not None and self._decided >= cfg.max_images:
                    ended_by = "max_images"
                    break
                if self._stop.is_set():
                    break
                if self.forwarder is not None and self.forwarder.fatal:
                    raise EdgepruneError(f"PLC signals cannot be delivered: {self.forwarder.fatal} "
                                         f"(the decisions so far are in {cfg.db}, their signals pending)")
                if self.on_progress is not None and time.perf_counter() - last_progress >= self.progress_every_s:
                    last_progress = time.perf_counter()
                    self.on_progress(self.status())
                ready = time.perf_counter()
            if self._stop.is_set() and ended_by != "max_images":
                ended_by = "signal" if self._signalled else "stop"
        finally:
            # Bounded whatever else is busy: the dashboard is asked to stop at once (and killed
            # after a short grace); the PLC drain, the MQTT flush and the fleet upload's wait for
            # its receipts share drain_timeout.
            self.state = "stopping"
            deadline = time.monotonic() + cfg.drain_timeout

            def remaining() -> float:
                return max(0.0, deadline - time.monotonic())

            if dashboard is not None:
                dashboard.request_stop()
            self.source.close()
            restore()
            if self.forwarder is not None:
                pending_left = self.forwarder.drain(remaining())
                self.forwarder.stop()
            if dashboard is not None:  # gone before the log closes
                dashboard.stop()
            if self.mqtt is not None:
                self.mqtt.flush_s = min(self.mqtt.flush_s, remaining())
                self.mqtt.stop()
            if self.uploader is not None:
                self.uploader.stop(remaining())
            self.state = "stopped"
            result = RunResult(
                decided=self._decided, skipped=self._skipped, counts=dict(self._run_counts),
                pending_left=pending_left, ended_by=ended_by,
                elapsed_s=time.perf_counter() - self._started,
                latency_ms_p50=_percentile(self._latency_ms, 50), latency_ms_p99=_percentile(self._latency_ms, 99),
                plc_latency_ms_p50=_percentile(self._plc_latency_ms, 50),
                plc_latency_ms_p99=_percentile(self._plc_latency_ms, 99),
                stages=self._stages.summary(), host=self._host["run"].sample(),
                mqtt=self.mqtt.link() if self.mqtt is not None else None, warnings=list(self.warnings))
        if self.forwarder is not None and self.forwarder.fatal:
            raise EdgepruneError(f"PLC signals cannot be delivered: {self.forwarder.fatal} "
                                 f"({result.pending_left} signal(s) pending in {cfg.db})")
        return result

    def _decide(self, item, seen_ms: float = 0.0) -> None:
        with self._swap_lock:
            decider = self._decider
        verdict = decider.decide(item.data)
        self._stages.add("decode", verdict.decode_ms)
        self._stages.add("infer", verdict.infer_ms)
        if verdict.image is not None:
            verdict = self._watch_drift(verdict)
        decided = time.perf_counter()
        latency_ms = (decided - item.arrival) * 1000.0
        needs_signal = self.forwarder is not None and verdict.decision != "ERROR"
        row_id = self.log.add(
            Decision(ts=time.time(), source=self.source.name, path=item.path, sha256=item.sha256,
                     predicted_class=verdict.predicted_class, probability=verdict.probability,
                     decision=verdict.decision, latency_ms=latency_ms, model_sha256=verdict.model_sha256,
                     true_class=item.true_class),
            needs_signal=needs_signal, state=item.state)
        logged = time.perf_counter()
        self._stages.add("log", seen_ms + (logged - decided) * 1000.0)
        if row_id is None:  # decided meanwhile by another process on the same database
            self._skipped += 1
            return
        if verdict.decision == "ERROR":
            self.log.alarm("image_error", f"{item.path}: {verdict.error}")
        self._decided += 1
        self._run_counts[verdict.decision] += 1
        if item.true_class is not None and verdict.decision in ("OK", "DEFECT"):
            self._judged += 1  # live OK/DEFECT accuracy where the source knows the truth
            self._correct += (verdict.decision == "OK") == (item.true_class in decider.ok_classes)
        self._latency_ms.append(latency_ms)
        if needs_signal:
            self._arrivals[row_id] = (item.arrival, logged)
            self.forwarder.wake()

    def _watch_drift(self, verdict):
        """The image's statistics into the drift window (~0.1 ms: drift.py); on a new alarm, an
        alarm row and an MQTT event; under drift_action = "review", the part goes to a person."""
        start = time.perf_counter()
        with self._drift_lock:
            monitor = self._drift
            if monitor is None:
                return verdict
            check = monitor.observe(image_statistics(verdict.image), verdict.top_probability)
            alarm = monitor.alarm
            if check.raised:
                self._drift_since = time.time()
        self._stages.add("drift", (time.perf_counter() - start) * 1000.0)
        if check.raised:
            self.log.set_state(DRIFT_STATE_KEY, repr(self._drift_since))
            worst = check.worst
            self.log.alarm("drift", f"input drift: PSI of {worst} {check.psi[worst]:.3f} > "
                           f"{monitor.threshold:g} over the last {monitor.window} images"
                           + ("; every part goes to REVIEW until acknowledged"
                              if self.config.drift_action == "review" else ""))
            if self.mqtt is not None:
                self.mqtt.publish_event("drift", self._drift_event("drift"))
        if alarm and self.config.drift_action == "review" and verdict.decision in ("OK", "DEFECT"):
            return replace(verdict, decision="REVIEW")
        return verdict

    def _drift_event(self, state: str, **extra: Any) -> dict[str, Any]:
        """The MQTT event's fields (fleet.store.ingest_event keeps them; `state` sets the
        station's drift state there)."""
        with self._swap_lock:
            model_sha256 = self._decider.model.sha256
        with self._drift_lock:
            monitor = self._drift
            last = monitor.last if monitor is not None else None
            return {"state": state, "action": self.config.drift_action,
                    "psi": last.psi if last else None, "worst": last.worst if last else None,
                    "statistic": last.psi[last.worst] if last and last.psi and last.worst else None,
                    "threshold": self.config.drift_psi_threshold, "window": self.config.drift_window,
                    "model_sha256": model_sha256, **extra}

    def acknowledge_drift(self, client: str | None = None) -> dict[str, Any]:
        """A person saw the drift alarm: it is cleared and the window starts afresh (a drift that
        persists raises it again after one full window); parts are decided normally again."""
        with self._drift_lock:
            monitor = self._drift
            if monitor is None:
                raise EdgepruneError(f"input drift is not watched on this station: {self._drift_off}")
            was = monitor.alarm
            monitor.acknowledge()
            self._drift_since = None
        if was:
            self.log.set_state(DRIFT_STATE_KEY, "")
            self.log.alarm("drift_acknowledged", f"input drift acknowledged by {client or 'a person'}")
            if self.mqtt is not None:
                self.mqtt.publish_event("drift", self._drift_event("ok", acknowledged_by=client))
        return {"acknowledged": was, **self.drift_status()}

    def drift_status(self) -> dict[str, Any]:
        """The drift watch for /api/status: state ok | drift | off, the PSI per statistic, ..."""
        with self._drift_lock:
            if self._drift is None:
                return {"state": "off", "action": self.config.drift_action, "reason": self._drift_off}
            return {**self._drift.state(), "action": self.config.drift_action, "since": self._drift_since}

    def _on_sent(self, row_id: int, acked: float) -> None:
        times = self._arrivals.pop(row_id, None)
        if times is not None:  # None: a signal of an earlier run
            self._plc_latency_ms.append((acked - times[0]) * 1000.0)
            self._stages.add("plc", (acked - times[1]) * 1000.0)

    _signalled = False

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            self._signalled = True
            self._stop.set()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in previous.items()]

    # ------------------------------------------------------------------------- for MQTT and the dashboard

    def _mqtt_message(self) -> tuple[dict, list[dict]]:
        rows = self.log.rows(since=self._mqtt_since, limit=-1)
        if rows:
            self._mqtt_since = rows[-1]["id"]
        with self._swap_lock:
            decider = self._decider
        summary = summarize(rows, ok_classes=decider.ok_classes, class_names=decider.model.class_names)
        mark, self._stage_mark = self._stage_mark, self._stages.mark()
        summary.update(stages=self._stages.summary(since=mark), host=self._host["mqtt"].sample())
        summary.update(
            ts=time.time(), source=self.source.name, interval_s=self.config.mqtt_interval_s,
            total=self.log.counts(), plc_backlog=self.log.backlog() if self.forwarder else None,
            plc_connected=self.forwarder.connected if self.forwarder else None,
            model=str(decider.model.path), model_sha256=decider.model.sha256,
            station_id=self.config.station_id, line=self.config.line)
        return summary, pick_samples(rows, self.config.mqtt_samples)

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot: what the dashboard's /api/status shows."""
        with self._swap_lock:
            decider = self._decider
        fwd = self.forwarder
        elapsed = time.perf_counter() - self._started if self._started else 0.0
        return {
            "state": self.state,
            "source": self.source.name,
            "model": str(decider.model.path),
            "model_sha256": decider.model.sha256,
            "model_origin": {"origin": self.start_model.origin, "detail": self.start_model.detail}
            if decider.model.path == self.start_model.path else {"origin": "swapped", "detail": "switched in this run"},
            "fallback_model_sha256": decider.fallback.sha256 if decider.fallback else None,
            "ok_classes": sorted(decider.ok_classes),
            "review_below": decider.review_below,
            "elapsed_s": elapsed,
            "decided_this_run": self._decided,
            "skipped_this_run": self._skipped,
            "rate_per_s": self._decided / elapsed if elapsed > 0 else None,
            "this_run": dict(self._run_counts),
            "total": self.log.counts(),
            "latency_ms_p50": _percentile(self._latency_ms, 50),
            "latency_ms_p99": _percentile(self._latency_ms, 99),
            "ok_defect_accuracy": self._correct / self._judged if self._judged else None,
            "labelled_this_run": self._judged,
            "plc": None if fwd is None else {
                "adapter": fwd.adapter.name, "connected": fwd.connected, "backlog": self.log.backlog(),
                "delivered_this_run": fwd.delivered, "reconciled": fwd.reconciled,
                "last_error": fwd.last_error, "outage_since": fwd.outage_since,
                "latency_ms_p50": _percentile(self._plc_latency_ms, 50),
                "latency_ms_p99": _percentile(self._plc_latency_ms, 99)},
            "mqtt": None if self.mqtt is None else {**self.mqtt.link(), "summaries": self.mqtt.published},
            "stages": self._stages.summary(),
            "host": self._host["status"].sample(),
            "warnings": list(self.warnings),
            "alarms": self.log.alarms(5),
            "drift": self.drift_status(),
        }

    def decisions(self, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self.log.rows(since=since, limit=limit)

    def review_queue(self, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self.log.rows(since=since, limit=limit, decision="REVIEW")

    def current_model(self) -> LoadedModel:
        """The model deciding now (its class names and metadata, for the dashboard)."""
        with self._swap_lock:
            return self._decider.model

    def swap_model(self, path: str | Path, gate: Callable[[LoadedModel], str | None] | None = None) -> str:
        """Load `path`, check it (its classes must cover ok_classes; `gate(model)` returns None to
        accept or the reason to refuse), then swap it in between two images. Returns the new
        model's sha256; on any refusal the running model stays and EdgepruneError says why."""
        cfg = self.config
        candidate = LoadedModel(path, runtime=cfg.runtime, threads=cfg.threads)
        check_ok_classes(candidate, cfg.ok_classes)
        if gate is not None:
            reason = gate(candidate)
            if reason:
                raise EdgepruneError(f"model {path} refused by the gate: {reason}")
        monitor, why = _drift_monitor(cfg, candidate)
        with self._swap_lock, self._drift_lock:
            old = self._decider
            self._decider = Decider(candidate, cfg.ok_classes, old.review_below, old.fallback)
            if monitor is not None and self._drift is not None and self._drift.alarm:
                monitor.alarm = True  # the alarm is about the images: it stays until acknowledged
            self._drift = monitor
            self._drift_off = why or 'drift_action = "off"'
        self.log.alarm("model_swap", f"{old.model.path} ({old.model.sha256[:12]}) -> {candidate.path} "
                       f"({candidate.sha256[:12]})")
        return candidate.sha256


def _drift_monitor(config: StationConfig, model: LoadedModel) -> tuple[DriftMonitor | None, str | None]:
    """The drift window over the model's reference, or None and why not."""
    if config.drift_action == "off":
        return None, None
    reference = model.classifier.metadata.drift_reference
    if reference is None:
        return None, (f"{model.path.name} carries no drift reference (exported without validation "
                      "data, or by an older edgeprune): input drift is not watched")
    return DriftMonitor(reference, config.drift_window, config.drift_psi_threshold), None


def _drift_noise_warning(monitor: DriftMonitor | None) -> list[str]:
    """A threshold near the PSI that clean images give by chance raises false alarms."""
    if monitor is None:
        return []
    clean = expected_null_psi(monitor.reference, monitor.window)
    if monitor.threshold >= 2 * clean:
        return []
    return [f"drift_psi_threshold {monitor.threshold:g} is less than twice the PSI that clean images give "
            f"by chance over drift_window = {monitor.window} against this model's {monitor.reference.images} "
            f"reference images (about {clean:.2f}): expect false drift alarms; raise drift_window or the "
            "threshold (docs/drift.md)"]


def _class_warnings(source, model: LoadedModel) -> list[str]:
    """A replay whose folder names match none of the model's classes: every true class is then
    unknown to the model, and the live accuracy compares unrelated names."""
    folders = getattr(source, "class_names", None)
    if not folders or set(folders) & set(model.class_names):
        return []
    return [f"the replay's folder names ({', '.join(folders[:6])}{', ...' if len(folders) > 6 else ''}) "
            f"match none of the model's classes ({', '.join(model.class_names)}): live accuracy is "
            "meaningless; name the folders after the model's classes"]
