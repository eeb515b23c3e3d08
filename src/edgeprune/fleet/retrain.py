"""Retrain and re-compress: a study on the base data plus the fleet's labelled parts, its
recommendation exported to INT8 (verified and gated) and registered as a candidate.

    outcome = run_retrain(config, Trigger("manual", "by hand"))     # `edgeprune fleet retrain`
    trigger = Retrains(engine).due(config.retrain)                  # `fleet retrain --auto` asks this

One retrain, start to finish:
1. Checked before anything is recorded: the study config loads, the acceptance set is a folder,
   and no acceptance image (by sha256 of its bytes) is among the images a candidate may train on
   (the study's data folder, when it is one, and the fleet's labelled tree).
2. The lock: one row in `retrain_lock`, taken with a conditional UPDATE (the same statement on
   SQLite and PostgreSQL; on both it is atomic against a concurrent one) as a lease of LEASE_S
   seconds, renewed by a heartbeat while the retrain runs. A second trigger meanwhile is refused
   and recorded as `refused`; a retrain whose process died leaves an expired lease, and the next
   one marks it `abandoned`.
3. The fleet's labelled tree (DATA/<class>/<sha256>.<ext>) is frozen into RUN_DIR/fleet-labels/
   (hard links, or copies across file systems), so labels arriving during a long study neither
   change its data halfway nor go uncounted: the next retrain counts labels received after this
   snapshot began.
4. `edgeprune.study.candidate.study_candidate`: the study with the snapshot as
   `DataOptions.extra_train` (training split only: never the validation or test split that
   chooses and judges the candidate), locally or on Ray; the config's recommendation rule; INT8
   export with its verification and accuracy gate.
5. `ModelRegistry.register`: the acceptance-set figures, parent (the newest rolled-out model),
   study run, data fingerprint, fleet labels used.
Every run is a `retrains` row: trigger, detail, times, state (running, done, failed, refused,
abandoned), the model's sha256 or the error.

Triggers (`Retrains.due`): `retrain_after_labels` counts labels (with an image) received since
the last finished retrain's snapshot; `retrain_after_drift_s` fires for a station whose drift
alarm has lasted that long and that no retrain has started since it was raised. A failed retrain
consumes its trigger too (so a broken study does not run again at every poll); a retrain by hand
always runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, and_, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.config import FleetConfig, RetrainSettings
from edgeprune.fleet.registry import ModelRegistry, models_dir_for
from edgeprune.fleet.store import IMAGE_EXTS, labels, stations
from edgeprune.outputs import file_sha256

Log = Callable[[str], None]
LEASE_S = 60.0  # the lock's lease; the heartbeat renews it every LEASE_S / 4
TRIGGERS = ("manual", "labels", "drift")
STATES = ("running", "done", "failed", "refused", "abandoned")
FINISHED = ("done", "failed")  # the states that consume a trigger
SNAPSHOT = "fleet-labels"  # RUN_DIR/fleet-labels/<class>/<sha256>.<ext>
CANDIDATE = "candidate-int8.onnx"

retrain_metadata = MetaData()

retrains = Table(
    "retrains", retrain_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("trigger", String(16), nullable=False),
    Column("detail", Text),  # why it started, in words
    Column("started_ts", Float, nullable=False),
    Column("ended_ts", Float),
    Column("state", String(16), nullable=False),
    Column("model_sha256", String(64)),
    Column("error", Text),
    Column("study_run", Text),
    Column("labels_cutoff_ts", Float),  # the snapshot began here: later labels count for the next one
    Column("fleet_labels", Integer),
    Column("owner", String(128)),
    Column("heartbeat_ts", Float),
)
retrain_lock = Table(
    "retrain_lock", retrain_metadata,
    Column("name", String(16), primary_key=True),
    Column("owner", String(128)),
    Column("retrain_id", Integer),
    Column("until", Float),
)


@dataclass(frozen=True)
class Trigger:
    kind: str  # manual | labels | drift
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in TRIGGERS:
            raise ValueError(f"unknown retrain trigger {self.kind!r}")


@dataclass(frozen=True)
class RetrainRecord:
    id: int
    trigger: str
    detail: str | None
    started_ts: float
    ended_ts: float | None
    state: str
    model_sha256: str | None
    error: str | None
    study_run: str | None
    labels_cutoff_ts: float | None
    fleet_labels: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RetrainOutcome:
    record: RetrainRecord
    model: Any  # registry.RegisteredModel
    experiment: str  # the study's recommended experiment
    recommendation: str
    rollout_id: int | None = None  # the roll-out started for it ([retrain] rollout = true)


def _record(row) -> RetrainRecord:
    values = dict(row._mapping)
    return RetrainRecord(**{k: values[k] for k in RetrainRecord.__dataclass_fields__})


class Retrains:
    """The `retrains` table and the lock, on the fleet database's engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        try:
            retrain_metadata.create_all(engine)
            with engine.begin() as conn:
                if conn.execute(select(retrain_lock.c.name)).first() is None:
                    conn.execute(insert(retrain_lock).values(name="retrain", owner=None, until=None))
        except IntegrityError:
            pass  # another process inserted the lock row first: that is the row we need
        except SQLAlchemyError as exc:
            raise EdgepruneError(f"cannot create the retrain tables: {getattr(exc, 'orig', exc)}") from None

    # ------------------------------------------------------------------------- the lock

    def begin(self, trigger: Trigger, owner: str, now: float | None = None) -> int:
        """Take the lock and record a running retrain (its id); or record the attempt as refused
        and raise, naming the retrain that holds it."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            taken = conn.execute(update(retrain_lock).where(and_(
                retrain_lock.c.name == "retrain",
                or_(retrain_lock.c.owner.is_(None), retrain_lock.c.until < now)))
                .values(owner=owner, until=now + LEASE_S, retrain_id=None)).rowcount == 1
            if taken:  # whatever still says running lost its holder (the lease ran out)
                conn.execute(update(retrains).where(retrains.c.state == "running").values(
                    state="abandoned", ended_ts=now, error="its process stopped: the lock's lease ran out"))
                rid = conn.execute(insert(retrains).values(  # the cutoff moves to the snapshot's start
                    trigger=trigger.kind, detail=trigger.detail, started_ts=now, state="running", owner=owner,
                    heartbeat_ts=now, labels_cutoff_ts=now)).inserted_primary_key[0]
                conn.execute(update(retrain_lock).where(retrain_lock.c.name == "retrain").values(retrain_id=rid))
                return int(rid)
        holder = self.running()
        what = (f"retrain {holder.id} ({holder.trigger}, started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.started_ts))})"
                if holder is not None else "another retrain")
        error = f"{what} is running: one retrain at a time"
        with self.engine.begin() as conn:
            conn.execute(insert(retrains).values(trigger=trigger.kind, detail=trigger.detail, started_ts=now,
                                                 ended_ts=now, state="refused", error=error, owner=owner))
        raise EdgepruneError(f"{error}; nothing started (`fleet models` / the fleet page show it)")

    def renew(self, retrain_id: int, owner: str) -> bool:
        now = time.time()
        with self.engine.begin() as conn:
            held = conn.execute(update(retrain_lock).where(and_(
                retrain_lock.c.name == "retrain", retrain_lock.c.owner == owner))
                .values(until=now + LEASE_S)).rowcount == 1
            conn.execute(update(retrains).where(retrains.c.id == retrain_id).values(heartbeat_ts=now))
        return held

    def finish(self, retrain_id: int, owner: str, *, state: str, model_sha256: str | None = None,
               error: str | None = None) -> None:
        """The retrain's end, and the lock released, in one transaction."""
        if state not in FINISHED:
            raise ValueError(f"a retrain ends done or failed, not {state!r}")
        with self.engine.begin() as conn:
            conn.execute(update(retrains).where(retrains.c.id == retrain_id).values(
                state=state, ended_ts=time.time(), model_sha256=model_sha256, error=error))
            conn.execute(update(retrain_lock).where(and_(retrain_lock.c.name == "retrain",
                                                         retrain_lock.c.owner == owner))
                         .values(owner=None, until=None, retrain_id=None))

    def set_snapshot(self, retrain_id: int, *, study_run: str, labels_cutoff_ts: float, fleet_labels: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(retrains).where(retrains.c.id == retrain_id).values(
                study_run=study_run, labels_cutoff_ts=labels_cutoff_ts, fleet_labels=fleet_labels))

    def record_failure(self, trigger: Trigger, error: str, owner: str) -> int:
        """A triggered retrain that failed before it could start (e.g. the acceptance set
        overlaps the labels): recorded, so the trigger is consumed and the page shows why."""
        now = time.time()
        with self.engine.begin() as conn:
            rid = conn.execute(insert(retrains).values(
                trigger=trigger.kind, detail=trigger.detail, started_ts=now, ended_ts=now, state="failed",
                error=error, owner=owner, labels_cutoff_ts=now)).inserted_primary_key[0]
        return int(rid)

    # ------------------------------------------------------------------------- reading

    def get(self, retrain_id: int) -> RetrainRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(retrains).where(retrains.c.id == retrain_id)).first()
        if row is None:
            raise EdgepruneError(f"no retrain {retrain_id}")
        return _record(row)

    def latest(self, limit: int = 20) -> list[RetrainRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(retrains).order_by(retrains.c.id.desc()).limit(limit)).all()
        return [_record(r) for r in rows]

    def recorded_by(self, owner: str) -> bool:
        """Whether `owner` left a row (began, was refused or failed): else its retrain stopped
        before anything was recorded."""
        with self.engine.connect() as conn:
            return conn.execute(select(retrains.c.id).where(retrains.c.owner == owner).limit(1)).first() is not None

    def running(self) -> RetrainRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(retrains).where(retrains.c.state == "running")
                               .order_by(retrains.c.id.desc())).first()
        return _record(row) if row else None

    def busy(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            row = conn.execute(select(retrain_lock).where(retrain_lock.c.name == "retrain")).first()
        return row is not None and row.owner is not None and (row.until or 0) >= now

    # ------------------------------------------------------------------------- triggers

    def due(self, settings: RetrainSettings, now: float | None = None) -> Trigger | None:
        """The trigger that asks for a retrain now, if any (labels first, then drift)."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            cutoff = conn.execute(select(func.max(retrains.c.labels_cutoff_ts))
                                  .where(retrains.c.state.in_(FINISHED))).scalar()
            last_start = conn.execute(select(func.max(retrains.c.started_ts))
                                      .where(retrains.c.state.in_(("running", *FINISHED)))).scalar()
            if settings.retrain_after_labels is not None:
                new = conn.execute(select(func.count()).select_from(labels).where(and_(
                    labels.c.file.is_not(None), labels.c.received_ts > (cutoff or 0.0)))).scalar() or 0
                if new >= settings.retrain_after_labels:
                    return Trigger("labels", f"{new} fleet label(s) since the last retrain "
                                             f"(retrain_after_labels = {settings.retrain_after_labels})")
            if settings.retrain_after_drift_s is not None:
                rows = conn.execute(select(stations.c.station_id, stations.c.drift_ts).where(and_(
                    stations.c.drift_state == "drift", stations.c.drift_ts.is_not(None),
                    stations.c.drift_ts <= now - settings.retrain_after_drift_s,
                    stations.c.drift_ts > (last_start or 0.0))).order_by(stations.c.drift_ts)).all()
                if rows:
                    names = ", ".join(r.station_id for r in rows)
                    return Trigger("drift", f"drift alarm on {names} for {now - rows[0].drift_ts:.0f} s "
                                            f"(retrain_after_drift_s = {settings.retrain_after_drift_s:g})")
        return None


# ----------------------------------------------------------------------------- one retrain


def _image_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower().lstrip(".") in IMAGE_EXTS)


def check_acceptance_disjoint(acceptance: Path, training: list[Path]) -> int:
    """The number of acceptance images; refused when any of them (by the sha256 of its bytes) is
    among the files under `training` (folders a candidate may train on)."""
    accepted = {file_sha256(p): p for p in _image_files(acceptance)}
    if not accepted:
        raise EdgepruneError(f"the acceptance set {acceptance} holds no images (<class>/<image>)")
    shared = []
    for root in training:
        for path in _image_files(root):
            twin = accepted.get(file_sha256(path))
            if twin is not None:
                shared.append((twin, path))
    if shared:
        examples = "; ".join(f"{a} = {t}" for a, t in shared[:3])
        raise EdgepruneError(f"the acceptance set overlaps the training images: {len(shared)} file(s) with the same "
                             f"bytes ({examples}{'; ...' if len(shared) > 3 else ''}): a candidate would be judged "
                             "on images it trained on; remove them from one side")
    return len(accepted)


def snapshot_labels(data: Path, out: Path) -> int:
    """The labelled tree frozen into `out` (hard links: no bytes copied; a copy across file
    systems); the number of images."""
    count = 0
    for path in _image_files(data):
        target = out / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except FileNotFoundError:
            continue  # relabelled meanwhile: the fleet moved it to its new class folder
        except OSError:
            shutil.copy2(path, target)
        count += 1
    return count


def retrain_runs_dir(config: FleetConfig) -> Path:
    return config.retrain.runs or config.data.with_name(config.data.name + "-retrains")


def owner_name(prefix: str) -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"


def run_retrain(config: FleetConfig, trigger: Trigger, *, owner: str | None = None,
                log: Log | None = None) -> RetrainOutcome:
    """One retrain (see the module's docstring). Bad input raises EdgepruneError before anything
    is recorded; a failure after the start is recorded as `failed` and raised; the registry
    changes only when a candidate passed every step."""
    from edgeprune.fleet.store import make_engine
    from edgeprune.study.config import load_config as load_study

    say = log or (lambda _m: None)
    settings = config.retrain
    if settings.study is None:
        raise EdgepruneError("no study to retrain with: pass --study CONFIG.toml or set [retrain] study in the fleet config")
    if config.acceptance is None:
        raise EdgepruneError("no acceptance set: set acceptance in the fleet config (a labelled folder no candidate "
                             "trains on)")
    if not config.acceptance.is_dir():
        raise EdgepruneError(f"the acceptance set {config.acceptance} is not a folder")
    study = load_study(settings.study)
    if study.data.extra_train is not None:
        raise EdgepruneError(f"{settings.study}: [data] extra_train is the fleet's labels in a retrain; leave it out")
    base = Path(study.data.spec)  # a folder is made absolute by the study config; digits / cifar10 are names
    folders = [base, config.data] if base.is_absolute() and base.is_dir() else [config.data]
    check_acceptance_disjoint(config.acceptance, folders)
    owner = owner or owner_name("retrain")
    engine = make_engine(config.db)
    try:
        registry = ModelRegistry(engine, models_dir_for(config.data))
        book = Retrains(engine)
        retrain_id = book.begin(trigger, owner)
        say(f"retrain {retrain_id} ({trigger.kind}: {trigger.detail})")
        beat = _Heartbeat(book, retrain_id, owner)
        try:
            run_dir = retrain_runs_dir(config) / f"retrain-{retrain_id}"
            if run_dir.exists():  # left by a retrain of another database: never reused
                raise EdgepruneError(f"{run_dir} exists already: move it away or set [retrain] runs")
            cutoff = time.time()
            images = snapshot_labels(config.data, run_dir / SNAPSHOT)
            book.set_snapshot(retrain_id, study_run=str(run_dir), labels_cutoff_ts=cutoff, fleet_labels=images)
            say(f"{images} fleet-labelled image(s) frozen into {run_dir / SNAPSHOT} (training split only)")
            from edgeprune.study.candidate import study_candidate

            candidate = study_candidate(study, run_dir / "study", run_dir / CANDIDATE,
                                        extra_train=run_dir / SNAPSHOT if images else None,
                                        executor=settings.executor, ray_address=settings.ray_address,
                                        max_drop=settings.int8_max_drop, log=say)
            rolled = [m for m in registry.models() if m.state == "rolled-out"]
            model = registry.register(
                candidate.path, acceptance=config.acceptance, ok_classes=config.ok_classes,
                parent=rolled[0].sha256 if rolled else None, study_run=str(candidate.run_dir),
                data_fingerprint=candidate.data_fingerprint, fleet_labels=candidate.extra_train_images,
                reason=f"retrain {retrain_id} ({trigger.kind}): {candidate.experiment}")
        except BaseException as exc:  # recorded whatever stopped it, Ctrl-C included
            beat.stop()
            message = str(exc) if isinstance(exc, EdgepruneError) else f"{type(exc).__name__}: {exc}"
            book.finish(retrain_id, owner, state="failed", error=message[:2000])
            raise
        beat.stop()
        book.finish(retrain_id, owner, state="done", model_sha256=model.sha256)
        rollout_id = rollout_candidate(config, engine, registry, model.sha256, say) if settings.rollout else None
        return RetrainOutcome(book.get(retrain_id), model, candidate.experiment, candidate.recommendation,
                              rollout_id)
    finally:
        engine.dispose()


def rollout_candidate(config: FleetConfig, engine: Engine, registry: ModelRegistry, sha256: str, say: Log) -> int | None:
    """A roll-out of the new candidate to every [[stations]] entry, for `fleet serve` to drive. The
    candidate stays registered whatever happens here: a roll-out still active (one at a time) is
    said, not raised, and a person can start this one later with `fleet rollout`."""
    from edgeprune.fleet.rollout import Rollouts

    try:
        rollout_id = Rollouts(engine, registry).create(sha256, [e.id for e in config.endpoints], config.rollout)
    except EdgepruneError as exc:
        say(f"no roll-out started for {sha256[:12]}: {exc}")
        return None
    say(f"roll-out {rollout_id} of {sha256[:12]} to {', '.join(e.id for e in config.endpoints)} created: "
        "`fleet serve` drives it (or `fleet rollout ... --wait`)")
    return rollout_id


class _Heartbeat:
    """Renews the lock's lease while a retrain runs (a study can take hours)."""

    def __init__(self, book: Retrains, retrain_id: int, owner: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(book, retrain_id, owner), daemon=True,
                                        name="edgeprune-retrain-heartbeat")
        self._thread.start()

    def _run(self, book: Retrains, retrain_id: int, owner: str) -> None:
        while not self._stop.wait(LEASE_S / 4):
            try:
                book.renew(retrain_id, owner)
            except SQLAlchemyError:
                pass  # the database is away for a moment: the next beat tries again within the lease

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def watch(config: FleetConfig, *, stop: threading.Event | None = None, max_runs: int | None = None,
          log: Log | None = None) -> int:
    """`fleet retrain --auto`: every poll_s, start a retrain when a trigger is due (one at a time,
    the lock decides); until `stop` is set or `max_runs` retrains were started. Returns how many."""
    from edgeprune.fleet.store import make_engine

    say = log or (lambda _m: None)
    settings = config.retrain
    if settings.retrain_after_labels is None and settings.retrain_after_drift_s is None:
        raise EdgepruneError("no trigger: set [retrain] retrain_after_labels and/or retrain_after_drift_s")
    stop = stop or threading.Event()
    engine = make_engine(config.db)
    book = Retrains(engine)
    ran = 0
    try:
        while not stop.is_set() and (max_runs is None or ran < max_runs):
            trigger = None if book.busy() else book.due(settings)
            if trigger is not None:
                owner = owner_name("auto")
                ran += 1
                try:
                    outcome = run_retrain(config, trigger, owner=owner, log=say)
                    say(f"retrain {outcome.record.id} done: registered {outcome.model.sha256[:12]} as a candidate")
                except EdgepruneError as exc:
                    if book.running() is None and not book.recorded_by(owner):
                        book.record_failure(trigger, str(exc)[:2000], owner)  # failed before it started
                    say(f"retrain ({trigger.kind}) failed: {exc}")
                continue
            stop.wait(settings.poll_s)
    finally:
        engine.dispose()
    return ran
