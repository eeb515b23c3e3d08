"""Run a study: plan it, skip what the database already holds, run the rest on one machine
(`local`) or as Ray tasks (`ray`), storing each experiment the moment it finishes.

Local: the experiments run one after the other in this process, with a progress display
(experiment i of N, the workflows' own step and epoch bars, elapsed time and an ETA from the
experiments finished so far).

Ray: each experiment is one Ray task (`[ray] cpus_per_task`, `gpus_per_task`) on the cluster at
`--ray-address` (or a local instance). A task runs `execute` in a temporary folder on its worker
and returns the folder's files with its result; the driver unpacks them into RUN_DIR and writes
the row, so RUN_DIR need not be shared between machines. Baselines run first (each pruning
experiment starts from its fold's baseline, shipped to the worker through Ray's object store).
Ray does the scheduling; nothing here decides which worker runs what.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_folder
from edgeprune.study.config import EXECUTORS, StudyConfig, load_config
from edgeprune.study.plan import Experiment, plan_study
from edgeprune.study.store import DB_NAME, LOCK_NAME, RunLock, StudyStore

Log = Callable[[str], None]
OVERHEAD_UNITS = 1.0  # export, verification and bench of one experiment, in training-epoch units


@dataclass
class StudyRun:
    run_dir: Path
    planned: list[Experiment]
    skipped: list[Experiment] = field(default_factory=list)  # finished before this run
    ran: list[Experiment] = field(default_factory=list)
    estimate_s: float | None = None


def work_units(exp: Experiment) -> float:
    """Epochs of training an experiment costs (plus its measuring): what ETAs are scaled by.
    Read from the stored dict, not `exp.settings`: finished rows in the database may hold the
    configs of an earlier version, and an estimate must not fail on them."""
    if exp.kind == "baseline":
        epochs = 0 if exp.config["baseline"]["checkpoint"] else exp.config["baseline"]["recipe"]["epochs"]
    else:
        epochs = exp.config["prune"]["finetune_epochs"] * exp.config["prune"]["steps"]
    return epochs + OVERHEAD_UNITS


def _format_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def check_run_dir(run_dir: Path, config: StudyConfig, *, resume: bool) -> None:
    """Nothing is overwritten silently: an existing study needs --resume, any other non-empty
    folder is refused."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise EdgepruneError(f"--out {run_dir} exists and is not a folder")
    if (run_dir / DB_NAME).is_file():
        if not resume:
            raise EdgepruneError(f"{run_dir} already holds a study: add --resume to continue it "
                                 "(finished experiments are kept), or choose another --out")
        with StudyStore(run_dir) as store:
            stored = store.value("name")
        if stored is not None and stored != config.name:
            raise EdgepruneError(f"{run_dir} holds the study {stored!r}, not {config.name!r}: resume it with "
                                 "its own config, or choose another --out")
        return
    if any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise EdgepruneError(f"--out {run_dir} is a non-empty folder that holds no study; choose an "
                             "empty or new folder")


def estimate_seconds(config: StudyConfig, experiments: list[Experiment], data,
                     finished_rows: list[dict] | None = None) -> float:
    """Estimated wall time: from the experiments already finished when there are any (seconds
    per work unit), otherwise from timing a few training steps of the baseline's network here."""
    units = sum(work_units(e) for e in experiments)
    if finished_rows:
        done_units = sum(work_units(Experiment(r["key"], r["name"], r["kind"], r["fold"], r["config"],
                                               r["baseline_key"])) for r in finished_rows)
        return units * sum(r["wall_s"] for r in finished_rows) / done_units
    import torch

    from edgeprune.models import create_model
    from edgeprune.train.loop import auto_batch_size

    torch.set_num_threads(config.measure.train_threads)
    n_train = len(data.train.labels)
    batch = config.baseline.recipe.get("batch_size") or auto_batch_size(n_train)
    epoch_s = {}
    for arch in {e.settings.arch for e in experiments}:
        model = create_model(arch, len(data.class_names), width_mult=config.baseline.width_mult)
        x = torch.randn(batch, 3, data.image_size, data.image_size)
        y = torch.zeros(batch, dtype=torch.long)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        timings = []
        for _ in range(4):  # the first is a warm-up (allocations): min() drops it
            started = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            timings.append(time.perf_counter() - started)
        epoch_s[arch] = min(timings) * max(1, n_train // batch) * 1.3  # + validation pass
    # + export, verification and bench, about 8 s an experiment at small sizes
    return sum(work_units(e) * epoch_s[e.settings.arch] + 8.0 for e in experiments)


def run_study(config: StudyConfig | str | Path, out: str | Path, *, resume: bool = False,
              executor: str = "local", ray_address: str | None = None, dry_run: bool = False,
              ray_init: dict[str, Any] | None = None, log: Log | None = None,
              progress: bool = False) -> StudyRun:
    """Run (or, with dry_run, only plan and estimate) a study into RUN_DIR `out`."""
    say = log or (lambda _m: None)
    if not isinstance(config, StudyConfig):
        config = load_config(config)
    if executor not in EXECUTORS:
        raise EdgepruneError(f"unknown executor {executor!r}: {', '.join(EXECUTORS)}")
    run_dir = Path(out)
    check_run_dir(run_dir, config, resume=resume)
    kwargs = dict(executor=executor, ray_address=ray_address, dry_run=dry_run, ray_init=ray_init, say=say,
                  progress=progress)
    if dry_run:  # reads only
        return _run_study(config, run_dir, **kwargs)
    with RunLock(run_dir):
        check_run_dir(run_dir, config, resume=resume)  # again under the lock: its holder may have finished
        return _run_study(config, run_dir, **kwargs)


def _run_study(config: StudyConfig, run_dir: Path, *, executor: str, ray_address: str | None, dry_run: bool,
               ray_init: dict[str, Any] | None, say: Log, progress: bool) -> StudyRun:
    from edgeprune.study.execute import load_fold_data
    from edgeprune.study.plan import fold_data

    from edgeprune.data import load_data

    first = load_data(fold_data(config, 0), log=say)  # its fingerprint keys every experiment
    if first.split is None:
        raise EdgepruneError("internal: the data has no split record (no fingerprint)")
    planned = plan_study(config, first.split.fingerprint)
    store = None
    done: set[str] = set()
    if (run_dir / DB_NAME).is_file():
        store = StudyStore(run_dir)
        done = store.done_keys()
    todo = [e for e in planned if e.key not in done]
    result = StudyRun(run_dir, planned, skipped=[e for e in planned if e.key in done])
    result.estimate_s = estimate_seconds(config, todo, first, store.rows() if store else None) if todo else 0.0
    if dry_run:
        if store:
            store.close()
        return result
    if store is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        store = StudyStore(run_dir, create=True)
    with store:
        store.set_value("name", config.name)
        store.set_value("config_text", config.text)
        store.set_value("recommend", config.recommend.__dict__)
        store.set_value("folds", config.folds)
        say(f"study {config.name}: {len(planned)} experiment(s), {len(result.skipped)} finished already, "
            f"{len(todo)} to run ({executor}); estimated {_format_s(result.estimate_s)}")
        if executor == "local":
            _run_local(config, todo, planned, run_dir, store, first, result, say, progress, load_fold_data)
        else:
            _run_ray(config, todo, planned, run_dir, store, result, say, ray_address, ray_init or {})
    return result


def _baseline_dir(run_dir: Path, planned: list[Experiment], key: str | None) -> Path | None:
    from edgeprune.study.execute import CHECKPOINT

    for e in planned:
        if e.key == key:
            return run_dir / e.folder / CHECKPOINT
    return None


class _Eta:
    def __init__(self, todo: list[Experiment], estimate_s: float | None):
        self.remaining = sum(work_units(e) for e in todo)
        self.units_done = 0.0
        self.seconds_done = 0.0
        self.estimate_s = estimate_s
        self.total_units = self.remaining

    def finished(self, exp: Experiment, wall_s: float) -> None:
        self.units_done += work_units(exp)
        self.seconds_done += wall_s
        self.remaining -= work_units(exp)

    def eta(self) -> float | None:
        if self.units_done:
            return self.remaining * self.seconds_done / self.units_done
        if self.estimate_s is not None and self.total_units:
            return self.estimate_s * self.remaining / self.total_units
        return None


def _run_local(config, todo, planned, run_dir, store, first, result, say, progress, load_fold_data) -> None:
    from edgeprune.study.execute import execute

    eta = _Eta(todo, result.estimate_s)
    # Data per (fold, input size): a grid over image_size needs the fold's images at each size.
    data_by_fold = {(0, first.image_size): first}
    for index, exp in enumerate(todo, start=1):
        where = (exp.fold, exp.settings.data.image_size)
        if where not in data_by_fold:
            if len(data_by_fold) > 1:  # one extra bundle at a time: 224 px tiles are 200 MB
                data_by_fold = {(0, first.image_size): first}
            data_by_fold[where] = load_fold_data(exp.settings, log=say)
        say(f"[{index}/{len(todo)}] {exp.label}: started; ETA for the study {_format_s(eta.eta())}")
        store.record_attempt(exp.key, exp.name)
        started_at = time.time()
        started = time.perf_counter()
        try:
            outcome = execute(exp.to_dict(), run_dir, data=data_by_fold[where],
                              baseline_checkpoint=_baseline_dir(run_dir, planned, exp.baseline_key),
                              log=say, progress=progress)
        except EdgepruneError as exc:  # the study stops here; --resume keeps what finished
            raise EdgepruneError(f"experiment {exp.label} failed: {exc} ({len(result.ran)} experiment(s) "
                                 f"of this run are stored; fix the config and --resume)") from None
        wall = time.perf_counter() - started
        store.record_result(exp, outcome, wall_s=wall, started_at=started_at)
        result.ran.append(exp)
        eta.finished(exp, wall)
        say(f"[{index}/{len(todo)}] {exp.label}: done in {_format_s(wall)}, test accuracy "
            f"{outcome['accuracy']:.4f}; ETA for the rest {_format_s(eta.eta())}")


# ----------------------------------------------------------------------------- Ray

def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def _unpack(blob: bytes, target: Path) -> None:
    """Unpack with the one safe writer: the folder appears whole or not at all, and an unfinished
    attempt's folder there (it has no row) is swapped out in one rename, then removed."""
    with atomic_folder(target, overwrite=True, owned=True, what="experiment folder") as staging:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            tar.extractall(staging, filter="data")


def ray_task(experiment: dict[str, Any], baseline_blob: bytes | None) -> dict[str, Any]:
    """What one Ray task does: run the experiment in a temporary RUN_DIR on this worker and
    return its result and files."""
    import socket

    from edgeprune.study.execute import CHECKPOINT, execute

    exp = Experiment.from_dict(experiment)
    with tempfile.TemporaryDirectory(prefix="edgeprune-study-") as tmp:
        baseline = None
        if baseline_blob is not None:
            baseline = Path(tmp) / "baseline"
            _unpack(baseline_blob, baseline)
            baseline = baseline / CHECKPOINT
        started_at = time.time()
        started = time.perf_counter()
        result = execute(experiment, tmp, baseline_checkpoint=baseline)
        wall = time.perf_counter() - started
        return {"result": result, "files": _pack(Path(tmp) / exp.folder), "wall_s": wall,
                "started_at": started_at, "host": socket.gethostname()}


def _run_ray(config, todo, planned, run_dir, store, result, say, address, init_options) -> None:
    try:
        import ray
    except ImportError:
        raise EdgepruneError("--executor ray needs Ray: pip install edgeprune[ray]") from None
    started_here = not ray.is_initialized()
    if started_here:
        options = {"include_dashboard": False, "log_to_driver": False, **init_options}
        # Local workers must import this edgeprune, wherever it was imported from here.
        source = str(Path(__file__).resolve().parents[2])
        env = {"PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
        options.setdefault("runtime_env", {"env_vars": env} if address is None else None)
        if options["runtime_env"] is None:
            options.pop("runtime_env")
        ray.init(address=address, **options)
    remote = ray.remote(num_cpus=config.ray.cpus_per_task, num_gpus=config.ray.gpus_per_task,
                        max_retries=0)(ray_task)
    eta = _Eta(todo, result.estimate_s)
    try:
        for wave in ("baseline", "prune"):
            experiments = [e for e in todo if e.kind == wave]
            blobs: dict[str, Any] = {}
            pending = {}
            for exp in experiments:
                blob = None
                if exp.baseline_key is not None:
                    if exp.baseline_key not in blobs:
                        base = _baseline_dir(run_dir, planned, exp.baseline_key)
                        blobs[exp.baseline_key] = ray.put(_pack(base.parent))
                    blob = blobs[exp.baseline_key]
                store.record_attempt(exp.key, exp.name)
                pending[remote.remote(exp.to_dict(), blob)] = exp
            say(f"ray: {len(pending)} {wave} task(s) submitted")
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                exp = pending.pop(ready[0])
                try:
                    out = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(getattr(exc, "cause", None), EdgepruneError) else None
                    raise cause or EdgepruneError(f"{exp.label} failed on its Ray worker: {exc}") from None
                _unpack(out["files"], run_dir / exp.folder)
                store.record_result(exp, out["result"], wall_s=out["wall_s"], started_at=out["started_at"],
                                    host=out["host"])
                result.ran.append(exp)
                eta.finished(exp, out["wall_s"])
                say(f"ray: {exp.label} done on {out['host']} in {_format_s(out['wall_s'])}, test accuracy "
                    f"{out['result']['accuracy']:.4f}; {len(pending)} running or queued")
    finally:
        if started_here:
            ray.shutdown()


def print_plan(run: StudyRun, write: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> None:
    done = {e.key for e in run.skipped}
    for exp in run.planned:
        state = "done" if exp.key in done else "to run"
        write(f"{exp.key[:10]}  {exp.label:<40} {state}")
    write(f"{len(run.planned)} experiment(s), {len(done)} finished, estimated {_format_s(run.estimate_s)} "
          "for the rest")
