"""A study config: one TOML file read with tomllib into dataclasses, validated before anything runs.

    name = "digits-quick"
    folds = 1                      # > 1: stratified k-fold, every experiment per fold (plan.py)
    [data]        spec, image_size, val_fraction, test_fraction, seed, normalization, max_per_class,
                  extra_train (a class-folder tree added to the training split only)
    [baseline]    arch, weights, width_mult, epochs, optimizer, lr, ... | checkpoint = "PATH"
    [finetune]    the fine-tune recipe (optimizer, lr, ...; epochs come from each experiment)
    [[experiments]] name, method, target, target_kind, schedule, steps, finetune_epochs, distill,
                  final_epochs, image_size, max_drop, seed, options = {...}   (options: the method
                  config's own fields; image_size: fine-tune and run the cut at this input size)
    [grid]        method, schedule, target, target_kind, steps, finetune_epochs, distill,
                  final_epochs, image_size: lists (image_size = [160, 192, 224]: resolution and
                  pruning compared on the same axes)
    [measure]     threads, train_threads, runtimes, budget_s, memory, train_device,
                  robustness (true | false | "auto"), robustness_shifts, robustness_severities,
                  ok_classes (the good-part classes: every model is also judged at operating
                  points, the threshold on P(OK) chosen on validation for each recall_targets entry)
    [ray]         cpus_per_task, gpus_per_task
    [recommend]   max_drop, metric, max_latency_ms, max_size_mb, prefer, batch

Every key is checked: an unknown key, method or schedule, a target outside (0, 1), a missing
data folder give an EdgepruneError naming the key and its line in the file. The numbers go
through the same objects the CLI builds (TrainRecipe, the pruning configs, Schedule, DataOptions),
so a study and a command reject the same values with the same words.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError

METRICS = ("accuracy", "balanced_accuracy")  # or "recall:<class name>", "false_reject@recall=R"
OPERATING_METRIC = "false_reject@recall="  # + a recall target of [measure] recall_targets


def operating_metric_column(recall: float) -> str:
    """The results column of the false-reject rate at a validation-chosen defect recall."""
    return f"{OPERATING_METRIC}{recall:g}"
PREFER = ("fastest", "smallest")
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class BaselineSpec:
    archs: tuple[str, ...] = ("mobilenet_v2",)  # `arch = [...]`: a baseline per architecture
    weights: str = "none"
    width_mult: float = 1.0
    checkpoint: str | None = None  # load this instead of training (its own split must match)
    recipe: dict[str, Any] = field(default_factory=lambda: {"epochs": 3})


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    method: str
    target: float
    target_kind: str = "params"  # channel methods only
    schedule: str = "oneshot"
    steps: int = 1
    finetune_epochs: int = 1
    distill: bool = False
    max_drop: float | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    final_epochs: int = 0  # distilled (with distill) fine-tune epochs after the last step
    image_size: int | None = None  # None: the baseline's; else the cut is fine-tuned and run at it


@dataclass(frozen=True)
class MeasureSpec:
    threads: int = 1  # latency threads
    train_threads: int = 1  # torch threads for training and fine-tuning in each experiment
    runtimes: tuple[str, ...] | None = None  # None: every installed ONNX backend
    budget_s: float = 1.0  # timing seconds per backend and batch size
    memory: bool = True  # peak memory of inference, in a fresh process per backend (~2 s each)
    train_device: str = "auto"  # training and fine-tuning: auto (a GPU when the task has one) | cpu | cuda
    # Accuracy under shifted images (edgeprune.metrics.robustness) on the test split: true, false or
    # "auto" = on when the test split has at most 2000 images (execute.ROBUSTNESS_AUTO_MAX_TEST):
    # 18 evaluations a model, seconds on digits, minutes on CIFAR-10's 10 000 test images.
    robustness: bool | str = "auto"
    robustness_shifts: tuple[str, ...] | None = None  # None: every registered shift
    robustness_severities: tuple[int, ...] = (1, 2, 3)
    # The good-part classes (e.g. ["free"]): each model's exported file is also judged as a line
    # judges it, at the threshold on P(OK) chosen on the validation split for each defect-recall
    # target (edgeprune.runtime.operating_point): test defect recall, false-reject rate, ROC.
    ok_classes: tuple[str, ...] | None = None
    recall_targets: tuple[float, ...] = (0.98,)


@dataclass(frozen=True)
class RaySpec:
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0


@dataclass(frozen=True)
class RecommendRule:
    max_drop: float = 1.0  # percentage points below the baseline, in `metric`
    metric: str = "accuracy"  # accuracy | balanced_accuracy | recall:<class>
    max_latency_ms: float | None = None  # per image, ONNX Runtime, at `batch`
    max_size_mb: float | None = None  # ONNX file, MB = 10^6 bytes
    prefer: str = "fastest"  # fastest | smallest
    batch: int = 1  # the batch size whose latency counts (1 or 64)

    def __post_init__(self) -> None:
        from edgeprune.validation import check_number

        check_number(self.max_drop, "recommend.max_drop", min=0)
        if self.max_latency_ms is not None:
            check_number(self.max_latency_ms, "recommend.max_latency_ms", min=0, min_open=True)
        if self.max_size_mb is not None:
            check_number(self.max_size_mb, "recommend.max_size_mb", min=0, min_open=True)
        if self.metric.startswith(OPERATING_METRIC):
            try:
                recall = float(self.metric[len(OPERATING_METRIC):])
            except ValueError:
                recall = float("nan")
            if not 0 < recall <= 1:
                raise EdgepruneError(f"recommend.metric {self.metric!r}: false_reject@recall=R with R in (0, 1], "
                                     "one of [measure] recall_targets")
        elif self.metric not in METRICS and not self.metric.startswith("recall:"):
            raise EdgepruneError(f"recommend.metric {self.metric!r}: accuracy, balanced_accuracy, "
                                 "recall:<class name> or false_reject@recall=R")
        if self.prefer not in PREFER:
            raise EdgepruneError(f"recommend.prefer {self.prefer!r}: fastest or smallest")
        if self.batch not in (1, 64):
            raise EdgepruneError(f"recommend.batch must be 1 or 64, got {self.batch!r}")


@dataclass(frozen=True)
class StudyConfig:
    name: str
    data: Any  # edgeprune.data.DataOptions
    baseline: BaselineSpec
    finetune: dict[str, Any]
    experiments: tuple[ExperimentSpec, ...]
    folds: int = 1
    measure: MeasureSpec = MeasureSpec()
    ray: RaySpec = RaySpec()
    recommend: RecommendRule = RecommendRule()
    path: str | None = None
    text: str = ""  # the TOML as read: stored in RUN_DIR beside the results


@dataclass(frozen=True)
class BaselineRun:
    """How one baseline is made: trained (`recipe`, a TrainRecipe) or loaded (`checkpoint`)."""

    arch: str
    weights: str
    width_mult: float
    checkpoint: str | None
    recipe: Any  # edgeprune.train.TrainRecipe


@dataclass(frozen=True)
class ExperimentConfig:
    """One planned experiment's resolved config, typed: `Experiment.config` (plan.py) stays the
    JSON-ready dict its key is hashed from, stored and sent to a Ray worker; this is that dict
    parsed once (`from_dict`) for the code that runs and schedules the experiment."""

    kind: str  # "baseline" | "prune"
    folds: int
    fold: int
    arch: str
    data: Any  # edgeprune.data.DataOptions: this fold's, at the experiment's input size
    fingerprint: str  # the data's, when planned: a changed data set is refused (execute.load_fold_data)
    measure: MeasureSpec
    baseline: BaselineRun | None = None  # kind "baseline"
    prune: ExperimentSpec | None = None  # kind "prune"
    finetune: Any = None  # kind "prune": the TrainRecipe, epochs per step

    @classmethod
    def from_dict(cls, values: dict[str, Any], name: str) -> ExperimentConfig:
        from edgeprune.data import DataOptions
        from edgeprune.train import TrainRecipe

        data = dict(values["data"])
        fingerprint = data.pop("fingerprint")
        common = dict(kind=values["kind"], folds=values["folds"], fold=values["fold"], arch=values["arch"],
                      data=DataOptions(**data), fingerprint=fingerprint, measure=MeasureSpec(**values["measure"]))
        if values["kind"] == "baseline":
            spec = values["baseline"]
            return cls(**common, baseline=BaselineRun(
                arch=spec["arch"], weights=spec["weights"], width_mult=spec["width_mult"],
                checkpoint=spec["checkpoint"], recipe=TrainRecipe(**spec["recipe"])))
        prune = values["prune"]
        spec = ExperimentSpec(name=name, **{f.name: prune[f.name] for f in fields(ExperimentSpec)
                                            if f.name != "name" and f.name in prune})
        return cls(**common, prune=spec, finetune=TrainRecipe(**values["finetune"]))


# ----------------------------------------------------------------------------- parsing

TOP_KEYS = {"name", "folds", "data", "baseline", "finetune", "experiments", "grid", "measure", "ray",
            "recommend"}
DATA_KEYS = {"spec", "image_size", "val_fraction", "test_fraction", "seed", "normalization",
             "max_per_class", "download", "skip_bad", "extra_train"}
RECIPE_KEYS = {"epochs", "optimizer", "lr", "weight_decay", "label_smoothing", "batch_size", "schedule",
               "seed", "augment", "balance"}
BASELINE_KEYS = {"arch", "weights", "width_mult", "checkpoint"} | RECIPE_KEYS
EXPERIMENT_KEYS = {f.name for f in fields(ExperimentSpec)}
GRID_KEYS = {"method", "schedule", "target", "target_kind", "steps", "finetune_epochs", "distill",
             "final_epochs", "image_size",
             "max_drop", "seed"}
MEASURE_KEYS = {f.name for f in fields(MeasureSpec)}
RAY_KEYS = {f.name for f in fields(RaySpec)}
RECOMMEND_KEYS = {f.name for f in fields(RecommendRule)}


class _Lines:
    """Where a key sits in the TOML text, for messages: tomllib gives values, not positions, so
    the tables' headers and `key =` lines are found by a small scan (comments and strings that
    merely contain a key name do not start a line with `key =`)."""

    def __init__(self, text: str):
        self.found: dict[tuple[str, int, str], int] = {}  # (table, occurrence, key) -> line
        table, counts = "", {}
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            header = re.match(r"^\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?", stripped)
            if header:
                table = header.group(1)
                counts[table] = counts.get(table, -1) + 1
                self.found.setdefault((table, counts[table], ""), number)
                continue
            key = re.match(r"^([A-Za-z0-9_\-]+|\"[^\"]+\")\s*=", stripped)
            if key:
                self.found.setdefault((table, counts.get(table, 0), key.group(1).strip('"')), number)

    def line(self, table: str, key: str = "", index: int = 0) -> int | None:
        return self.found.get((table, index, key)) or self.found.get((table, index, ""))


def _where(path: str | None, lines: _Lines, table: str, key: str = "", index: int = 0) -> str:
    line = lines.line(table, key, index)
    name = ".".join(p for p in (table + (f"[{index}]" if table == "experiments" else ""), key) if p)
    at = f"{path or 'config'}" + (f", line {line}" if line else "")
    return f"{at}: {name}"


def _fail(message: str, path, lines, table, key="", index=0) -> EdgepruneError:
    return EdgepruneError(f"{_where(path, lines, table, key, index)}: {message}")


def _check_keys(values: dict, allowed: set[str], path, lines, table, index=0) -> None:
    for key in values:
        if key not in allowed:
            raise _fail(f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}", path, lines,
                        table, key, index)


def _table(raw: dict, name: str, path, lines) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise _fail("must be a table", path, lines, "", name)
    return value


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study TOML file (nothing is loaded, trained or written)."""
    p = Path(path)
    if not p.is_file():
        raise EdgepruneError(f"study config not found: {p}")
    text = p.read_text(encoding="utf-8")
    return parse_config(text, path=str(p))


def parse_config(text: str, *, path: str | None = None) -> StudyConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgepruneError(f"{path or 'config'}: not valid TOML: {exc}") from None
    lines = _Lines(text)
    base_dir = Path(path).resolve().parent if path else Path.cwd()
    for key in raw:
        if key not in TOP_KEYS:
            raise _fail(f"unknown key {key!r}; allowed: {', '.join(sorted(TOP_KEYS))}", path, lines, "", key)

    def guarded(table: str, key: str, build, index: int = 0):
        """Build an object; its EdgepruneError gets the key's place in the file."""
        try:
            return build()
        except EdgepruneError as exc:
            raise _fail(str(exc), path, lines, table, key, index) from None
        except TypeError as exc:
            raise _fail(f"wrong type: {exc}", path, lines, table, key, index) from None

    name = raw.get("name", Path(path).stem if path else "study")
    folds = raw.get("folds", 1)
    if isinstance(folds, bool) or not isinstance(folds, int) or not 1 <= folds <= 20:
        raise _fail(f"folds must be an integer in [1, 20], got {folds!r}", path, lines, "", "folds")

    data = _parse_data(_table(raw, "data", path, lines), base_dir, path, lines, guarded)
    if folds > 1:  # k-fold needs an unsplit source: refuse CIFAR-10 / ImageFolder trees here
        from edgeprune.data.load import check_folds
        from edgeprune.data.sources import detect_source

        guarded("", "folds", lambda: check_folds(detect_source(data.spec, download=data.download).kind,
                                                 data.replace(folds=folds)))
    baseline = _parse_baseline(_table(raw, "baseline", path, lines), base_dir, path, lines, guarded)
    if baseline.checkpoint and folds > 1:
        raise _fail("a baseline checkpoint holds one split; with folds > 1 each fold trains its own "
                    "baseline (leave checkpoint out)", path, lines, "baseline", "checkpoint")
    finetune = _table(raw, "finetune", path, lines)
    _check_keys(finetune, RECIPE_KEYS - {"epochs"}, path, lines, "finetune")
    from edgeprune.train import TrainRecipe

    for key in finetune:
        guarded("finetune", key, lambda key=key: TrainRecipe(epochs=1, **{key: finetune[key]}))
    guarded("finetune", "", lambda: TrainRecipe(epochs=1, **finetune))

    experiments = _parse_experiments(raw, path, lines, guarded)
    if not experiments:
        raise _fail("no experiments: add [[experiments]] entries or a [grid]", path, lines, "")
    names = [e.name for e in experiments]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(f"experiment names repeat: {', '.join(duplicates)}", path, lines, "experiments")

    measure_raw = _table(raw, "measure", path, lines)
    _check_keys(measure_raw, MEASURE_KEYS, path, lines, "measure")
    measure = _parse_measure(measure_raw, path, lines, guarded)
    ray_raw = _table(raw, "ray", path, lines)
    _check_keys(ray_raw, RAY_KEYS, path, lines, "ray")
    ray = RaySpec(**ray_raw)
    for key in ray_raw:
        from edgeprune.validation import check_number

        guarded("ray", key, lambda key=key: check_number(ray_raw[key], f"ray.{key}", min=0))
    rec_raw = _table(raw, "recommend", path, lines)
    _check_keys(rec_raw, RECOMMEND_KEYS, path, lines, "recommend")
    for key, value in rec_raw.items():  # name the exact key when one value is wrong
        guarded("recommend", key, lambda key=key, value=value: RecommendRule(**{key: value}))
    recommend = guarded("recommend", "", lambda: RecommendRule(**rec_raw))
    return StudyConfig(name=str(name), data=data, baseline=baseline, finetune=dict(finetune),
                       experiments=tuple(experiments), folds=folds, measure=measure, ray=ray,
                       recommend=recommend, path=path, text=text)


def expand_path(value: str, base_dir: Path) -> Path:
    """A path from a config: environment variables expanded (the shipped configs name the shared
    data sets and weights by $EDGEPRUNE_SHARED, which, unset, means the `shared` folder next to
    the project, as for the tests), then relative to the config file's folder, or failing that
    to the working directory."""
    if "$EDGEPRUNE_SHARED" in value.replace("{", "") and not os.environ.get("EDGEPRUNE_SHARED"):
        value = re.sub(r"\$\{?EDGEPRUNE_SHARED\}?", "../shared", value)
    path = Path(os.path.expandvars(value))
    if path.is_absolute():
        return path
    here = base_dir / path
    return here.resolve() if here.exists() or not path.exists() else path.resolve()


def _parse_data(values, base_dir: Path, path, lines, guarded):
    from edgeprune.data import DataOptions

    _check_keys(values, DATA_KEYS, path, lines, "data")
    values = dict(values)
    spec = values.get("spec", "digits")
    if not isinstance(spec, str):
        raise _fail(f"must be a string, got {spec!r}", path, lines, "data", "spec")
    if spec not in ("digits", "cifar10"):
        spec = str(expand_path(spec, base_dir))
    if spec != "digits" and not values.get("download") and not Path(spec).exists():
        shared = os.environ.get("EDGEPRUNE_SHARED")
        hint = f" (EDGEPRUNE_SHARED={shared})" if shared else ""
        raise _fail(f"data folder not found: {spec}{hint}", path, lines, "data", "spec")
    values["spec"] = spec
    if values.get("extra_train") is not None:  # training-only images (DataOptions.extra_train)
        extra = values["extra_train"]
        if not isinstance(extra, str) or not expand_path(extra, base_dir).is_dir():
            raise _fail(f"extra_train folder not found: {extra}", path, lines, "data", "extra_train")
        values["extra_train"] = str(expand_path(extra, base_dir))
    for key in values:
        guarded("data", key, lambda key=key: DataOptions(**{"spec": "digits", key: values[key]})
                if key != "spec" else None)
    return guarded("data", "", lambda: DataOptions(**values))


def _parse_baseline(values, base_dir: Path, path, lines, guarded) -> BaselineSpec:
    from edgeprune.models.zoo import ARCHITECTURES
    from edgeprune.train import TrainRecipe

    _check_keys(values, BASELINE_KEYS, path, lines, "baseline")
    archs = values.get("arch", "mobilenet_v2")
    archs = tuple(archs) if isinstance(archs, list) else (archs,)
    for arch in archs:
        if arch not in ARCHITECTURES:
            raise _fail(f"unknown architecture {arch!r}: {', '.join(ARCHITECTURES)}", path, lines, "baseline",
                        "arch")
    if not archs or len(set(archs)) != len(archs):
        raise _fail("list each architecture once", path, lines, "baseline", "arch")
    checkpoint = values.get("checkpoint")
    if checkpoint is not None:
        if len(archs) > 1:
            raise _fail("a checkpoint is one architecture: give one arch", path, lines, "baseline", "checkpoint")
        ckpt = expand_path(checkpoint, base_dir)
        if not (ckpt / "model.json").is_file():
            raise _fail(f"checkpoint folder not found (no model.json): {ckpt}", path, lines, "baseline",
                        "checkpoint")
        checkpoint = str(ckpt)
    recipe = {k: v for k, v in values.items() if k in RECIPE_KEYS}
    recipe.setdefault("epochs", 3)
    for key in recipe:
        guarded("baseline", key, lambda key=key: TrainRecipe(**{"epochs": 1, key: recipe[key]}))
    width = values.get("width_mult", 1.0)
    from edgeprune.validation import check_option

    guarded("baseline", "width_mult", lambda: check_option("width_mult", width))
    weights = values.get("weights", "none")
    if not isinstance(weights, str):
        raise _fail(f"must be none, imagenet or a path, got {weights!r}", path, lines, "baseline", "weights")
    if weights not in ("none", "imagenet"):
        if len(archs) > 1:
            raise _fail("a weights file is one architecture: give one arch, or none / imagenet", path, lines,
                        "baseline", "weights")
        weights_path = expand_path(weights, base_dir)
        if not weights_path.is_file():
            raise _fail(f"weights file not found: {weights_path}", path, lines, "baseline", "weights")
        weights = str(weights_path)
    return BaselineSpec(archs=archs, weights=weights, width_mult=float(width), checkpoint=checkpoint,
                        recipe=recipe)


def experiment_job(spec: ExperimentSpec, finetune=None):
    """The PruneJob an experiment asks for, built by `edgeprune prune`'s rules
    (PruneJob.from_options), so a study and the command give the same job for the same options.
    `finetune`: the experiment's TrainRecipe (None: from_options' default, for validation)."""
    from edgeprune.pruning.config import METHODS
    from edgeprune.workflows.prune import PruneJob

    if spec.method not in METHODS:
        raise EdgepruneError(f"unknown pruning method {spec.method!r}: choose one of {', '.join(METHODS)}")
    options = dict(spec.options)
    # An experiment's target_kind applies to channel methods only (a grid folds it for the
    # others); options.target_kind, where given, wins as it always did.
    target_kind = options.pop("target_kind", spec.target_kind if METHODS[spec.method].structured else None)
    # One seed, as on the command line: the experiment's seeds the random methods' draw too.
    if "seed" in options:
        if options["seed"] != spec.seed:
            raise EdgepruneError(f"options.seed = {options['seed']!r}: the experiment's seed ({spec.seed}) "
                                 "seeds the pruning too; set seed instead")
        del options["seed"]
    return PruneJob.from_options(
        spec.method, spec.target, target_kind=target_kind,
        latency_budget_ms=options.pop("latency_budget_ms", None), schedule=spec.schedule, steps=spec.steps,
        finetune=finetune, max_drop=spec.max_drop, seed=spec.seed, distill=spec.distill,
        final_epochs=spec.final_epochs, **options)


def _method_config(spec: ExperimentSpec):
    """The pruning config and schedule an experiment asks for (built: that is the validation)."""
    job = experiment_job(spec)
    return job.config, job.schedule


def _check_experiment(spec: ExperimentSpec, path, lines, guarded, table: str, index: int) -> None:
    from edgeprune.pruning import Schedule
    from edgeprune.pruning.config import METHODS, check_fraction
    from edgeprune.pruning.schedule import SCHEDULES
    from edgeprune.validation import check_option

    if spec.method not in METHODS:
        raise _fail(f"unknown method {spec.method!r}: choose one of {', '.join(METHODS)}", path, lines,
                    table, "method", index)
    if spec.schedule not in SCHEDULES:
        raise _fail(f"unknown schedule {spec.schedule!r}: choose one of {', '.join(SCHEDULES)}", path,
                    lines, table, "schedule", index)
    guarded(table, "target", lambda: check_fraction(spec.target, "target"), index)
    guarded(table, "steps", lambda: Schedule(spec.schedule, spec.steps), index)
    guarded(table, "finetune_epochs", lambda: check_option("epochs", spec.finetune_epochs,
                                                           name="finetune_epochs"), index)
    guarded(table, "max_drop", lambda: check_option("max_drop", spec.max_drop, optional=True), index)
    guarded(table, "final_epochs", lambda: check_option("epochs", spec.final_epochs, name="final_epochs"),
            index)
    if spec.image_size is not None:
        from edgeprune.data import DataOptions

        guarded(table, "image_size", lambda: DataOptions(image_size=spec.image_size), index)
    guarded(table, "seed", lambda: check_option("seed", spec.seed), index)
    if not isinstance(spec.distill, bool):
        raise _fail(f"distill must be true or false, got {spec.distill!r}", path, lines, table, "distill", index)
    guarded(table, "options" if spec.options else "method", lambda: _method_config(spec), index)


def _parse_experiments(raw: dict, path, lines, guarded) -> list[ExperimentSpec]:
    out: list[ExperimentSpec] = []
    entries = raw.get("experiments", [])
    if not isinstance(entries, list):
        raise _fail("must be an array of tables ([[experiments]])", path, lines, "", "experiments")
    for index, entry in enumerate(entries):
        _check_keys(entry, EXPERIMENT_KEYS, path, lines, "experiments", index)
        for required in ("method", "target"):
            if required not in entry:
                raise _fail(f"missing key {required!r}", path, lines, "experiments", "", index)
        values = dict(entry)
        values.setdefault("name", _default_name(values))
        try:
            spec = ExperimentSpec(**values)
        except TypeError as exc:
            raise _fail(f"wrong type: {exc}", path, lines, "experiments", "", index) from None
        _check_experiment(spec, path, lines, guarded, "experiments", index)
        out.append(spec)
    grid = raw.get("grid")
    if grid is not None:
        out.extend(_expand_grid(grid, path, lines, guarded))
    return out


def _default_name(v: dict) -> str:
    parts = [str(v["method"]), str(v.get("schedule", "oneshot"))]
    target = v["target"]
    # The name is made before the values are checked: a NaN, infinite or non-numeric target goes
    # into it as written, and _check_experiment then names the key and its line.
    finite = isinstance(target, (int, float)) and not isinstance(target, bool) and math.isfinite(target)
    parts.append(f"{round(target * 100):g}" if finite else str(target))
    if v.get("target_kind", "params") != "params" and "channel" in str(v["method"]):
        parts.append(str(v["target_kind"]))
    if v.get("schedule", "oneshot") != "oneshot":
        parts.append(f"s{v.get('steps', 1)}")
    parts.append(f"ft{v.get('finetune_epochs', 1)}")
    if v.get("final_epochs"):
        parts.append(f"final{v['final_epochs']}")
    if v.get("image_size"):
        parts.append(f"{v['image_size']}px")
    if v.get("distill"):
        parts.append("kd")
    if v.get("max_drop") is not None:
        parts.append(f"md{v['max_drop']:g}")
    if v.get("seed", 0):
        parts.append(f"seed{v['seed']}")
    return "-".join(parts)


def _expand_grid(grid: dict, path, lines, guarded) -> list[ExperimentSpec]:
    """method x schedule x target x target_kind x steps x finetune_epochs x distill (x max_drop
    x seed). A one-shot schedule has one step whatever `steps` lists, and target kinds apply to
    channel methods only, so those combinations are folded instead of repeated."""
    import itertools

    from edgeprune.pruning.config import METHODS

    if not isinstance(grid, dict):
        raise _fail("must be a table", path, lines, "", "grid")
    _check_keys(grid, GRID_KEYS, path, lines, "grid")
    for required in ("method", "target"):
        if required not in grid:
            raise _fail(f"missing key {required!r}", path, lines, "grid")
    axes = {}
    defaults = {"schedule": "oneshot", "target_kind": "params", "steps": 1, "finetune_epochs": 1,
                "distill": False, "max_drop": None, "seed": 0, "final_epochs": 0, "image_size": None}
    for key in ("method", "schedule", "target", "target_kind", "steps", "finetune_epochs", "distill",
                "max_drop", "seed", "final_epochs", "image_size"):
        value = grid.get(key, defaults.get(key))
        axes[key] = value if isinstance(value, list) else [value]
        if not axes[key]:
            raise _fail("empty list", path, lines, "grid", key)
    out, seen = [], set()
    for combo in itertools.product(*axes.values()):
        v = dict(zip(axes, combo))
        if v["schedule"] == "oneshot":
            v["steps"] = 1
        if v["method"] in METHODS and not METHODS[v["method"]].structured:
            v["target_kind"] = "params"
        signature = tuple(sorted((k, str(x)) for k, x in v.items()))
        if signature in seen:
            continue
        seen.add(signature)
        try:
            spec = ExperimentSpec(name=_default_name(v), **v)
        except (TypeError, ValueError) as exc:
            raise _fail(f"wrong type: {exc}", path, lines, "grid") from None
        _check_experiment(spec, path, lines, guarded, "grid", 0)
        out.append(spec)
    return out


def _parse_measure(values: dict, path, lines, guarded) -> MeasureSpec:
    from edgeprune.validation import check_option

    runtimes = values.get("runtimes")
    if runtimes is not None:
        if isinstance(runtimes, str):
            runtimes = [r for r in runtimes.split(",") if r]
        from edgeprune.runtime.backends import BACKENDS as KNOWN_RUNTIMES

        for r in runtimes:
            if r not in KNOWN_RUNTIMES:
                raise _fail(f"unknown runtime {r!r}: {', '.join(KNOWN_RUNTIMES)}", path, lines, "measure",
                            "runtimes")
        runtimes = tuple(runtimes)
    if values.get("train_device", "auto") not in ("auto", "cpu", "cuda"):
        raise _fail(f"train_device must be auto, cpu or cuda, got {values['train_device']!r}", path, lines,
                    "measure", "train_device")
    robustness = values.get("robustness", "auto")
    if robustness not in (True, False, "auto"):
        raise _fail(f"robustness must be true, false or \"auto\", got {robustness!r}", path, lines, "measure",
                    "robustness")
    from edgeprune.metrics.robustness import parse_severities, parse_shifts

    if values.get("robustness_shifts") is not None:
        values = {**values, "robustness_shifts": tuple(
            guarded("measure", "robustness_shifts",
                    lambda: [s.name for s in parse_shifts(values["robustness_shifts"])]))}
    if "robustness_severities" in values:
        values = {**values, "robustness_severities": guarded(
            "measure", "robustness_severities", lambda: parse_severities(values["robustness_severities"]))}
    if values.get("ok_classes") is not None:
        ok = values["ok_classes"]
        if isinstance(ok, str):
            ok = [ok]
        if not isinstance(ok, list) or not ok or not all(isinstance(c, str) and c for c in ok):
            raise _fail("ok_classes must list class names, e.g. [\"free\"]", path, lines, "measure", "ok_classes")
        values = {**values, "ok_classes": tuple(ok)}
    if "recall_targets" in values:
        targets = values["recall_targets"]
        targets = targets if isinstance(targets, list) else [targets]
        from edgeprune.runtime.operating_point import parse_target

        for t in targets:
            guarded("measure", "recall_targets", lambda t=t: parse_target(f"defect_recall={t}"))
        values = {**values, "recall_targets": tuple(float(t) for t in targets)}
    for key, range_key in (("threads", "threads"), ("train_threads", "threads"), ("budget_s", "budget_s")):
        if key in values:
            guarded("measure", key, lambda key=key, range_key=range_key:
                    check_option(range_key, values[key], name=f"measure.{key}"))
    return MeasureSpec(**{**values, "runtimes": runtimes})
