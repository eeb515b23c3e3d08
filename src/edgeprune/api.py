"""The Python API: a few functions over objects, in the torchao / NNCF spirit.

    import edgeprune as ep
    data = ep.load_data("digits")
    model = ep.train_model(data, ep.TrainRecipe(epochs=3))
    pruned = ep.prune_model(model, ep.TaylorChannel(target=0.5), data, finetune=ep.TrainRecipe(epochs=2))
    print(ep.measure(pruned, data))
    artifact = ep.export_model(pruned, "digits.int8.onnx", format="onnx-int8", data=data)

(`train_model`, not `train`: `edgeprune.train` and `edgeprune.export` are subpackages.)

Models are `edgeprune.Model` objects (network + classes, input size, normalisation, data split,
pruning record); configs are dataclasses (`TrainRecipe`, the pruning configs, `Schedule`,
`DataOptions`); results are typed (`EvalResult`, `RobustnessResult`, `Measurement`, `ExportResult`,
`BenchRow`).
Nothing is written to disk unless asked: `model.save(dir)` / `edgeprune.load(dir)`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from edgeprune.data import DataBundle, DataOptions, load_data
from edgeprune.hardware import resolve_device, set_threads
from edgeprune.metrics import EvalResult, evaluate as _evaluate
from edgeprune.metrics.robustness import RobustnessResult
from edgeprune.models import Model
from edgeprune.errors import EdgepruneError
from edgeprune.pruning import METHODS, PruningConfig, Schedule
from edgeprune.runtime.bench import BenchRow
from edgeprune.train import TrainRecipe
from edgeprune.workflows.bench import bench_artifacts
from edgeprune.workflows import export as _export_workflow
from edgeprune.workflows.export import ExportResult
from edgeprune.workflows.measure import Measurement, measure as _measure_module
from edgeprune.workflows.prune import PruneJob
from edgeprune.workflows.prune import prune_model as _prune_workflow
from edgeprune.workflows.train import train_baseline

Log = Callable[[str], None] | None

__all__ = [
    "bench", "evaluate", "evaluate_shifted", "export_model", "load_data", "load_model", "measure", "prune_model", "train_model",
]


def load_model(path: str | Path, device: str = "cpu") -> Model:
    """A checkpoint folder (model.safetensors + model.json) as a Model."""
    return Model.load(path, device)


def train_model(
    data: DataBundle,
    recipe: TrainRecipe | None = None,
    *,
    arch: str = "mobilenet_v2",
    weights: str = "none",
    width_mult: float = 1.0,
    device: str = "auto",
    progress: bool = False,
    log: Log = None,
) -> Model:
    """Train `arch` on data.train (best validation epoch kept where fit does so) and return it with
    its metadata; the test accuracy is in `model.metrics`."""
    recipe = recipe or TrainRecipe(epochs=3)
    module, meta, _ = train_baseline(data, arch=arch, recipe=recipe, weights=weights,
                                     width_mult=width_mult, device=resolve_device(device),
                                     progress=progress, log=log)
    return Model(module.cpu().eval(), meta)


def prune_job(
    config: PruningConfig | str,
    *,
    target: float | None = None,
    target_kind: str | None = None,
    latency_budget_ms: float | None = None,
    schedule: Schedule | str | None = None,
    steps: int | None = None,
    finetune: TrainRecipe | None = None,
    max_drop: float | None = None,
    distill: bool = False,
    final_epochs: int = 0,
    recalib_batches: int = 20,
    seed: int = 0,
    **method_options,
) -> PruneJob:
    """The job prune_model runs, built by `edgeprune prune`'s rules (PruneJob.from_options): a
    method name with `target` / `target_kind` / `latency_budget_ms` and the method's options is
    exactly the command's flags; a config object is taken as it is, its target and options going
    through the same rules, with the job's defaults (schedule steps, fine-tune recipe) those of
    the command."""
    if isinstance(schedule, Schedule):
        if steps is not None and steps != schedule.steps:
            raise EdgepruneError(f"steps={steps} and {schedule} disagree: give the steps in one place")
        schedule, steps = schedule.kind, schedule.steps
    rest = dict(schedule=schedule or "oneshot", steps=steps, finetune=finetune, max_drop=max_drop,
                recalib_batches=recalib_batches, seed=seed, distill=distill, final_epochs=final_epochs)
    if isinstance(config, str):
        return PruneJob.from_options(config, target, target_kind=target_kind, latency_budget_ms=latency_budget_ms,
                                     **rest, **method_options)
    if not isinstance(config, PruningConfig):
        raise EdgepruneError(f"config must be a pruning config or a method name, got {config!r}")
    given = {k: v for k, v in dict(target=target, target_kind=target_kind, latency_budget_ms=latency_budget_ms,
                                   **method_options).items() if v is not None}
    if given:
        raise EdgepruneError(f"{', '.join(sorted(given))}: a config object carries its own target and options "
                             "(or pass a method name with them)")
    method, options = _config_options(config)
    job = PruneJob.from_options(method, **options, **rest)
    # The config as given: for a named method it is what from_options rebuilt; a generic one
    # keeps its criterion, and a random one the seed of its own draw.
    return dataclasses.replace(job, config=config)


def _config_options(config: PruningConfig) -> tuple[str, dict]:
    """A config as from_options' arguments: its method name (a generic config's named sibling,
    whose fields are the same but the criterion) and its target and options."""
    values = dataclasses.asdict(config)
    values.pop("criterion", None)
    values.pop("criterion_options", None)
    values.pop("seed", None)  # the job's seed; the config's own draw is restored after
    if config.structured:
        values.pop("ratio", None)  # folded into target when the config was built
        if values["target_kind"] != "latency":  # settings of a latency target, unused without one
            for key in ("latency_runtime", "latency_threads", "latency_min_keep"):
                values.pop(key)
    else:
        values["target"] = values.pop("sparsity")
    method = config.method if type(config) is METHODS.get(config.method) else (
        "l2-channel" if config.structured else "l1")
    return method, values


def prune_model(
    model: Model,
    config: PruningConfig | str,
    data: DataBundle,
    *,
    target: float | None = None,
    target_kind: str | None = None,
    latency_budget_ms: float | None = None,
    schedule: Schedule | str | None = None,
    steps: int | None = None,
    finetune: TrainRecipe | None = None,
    max_drop: float | None = None,
    distill: bool = False,
    final_epochs: int = 0,
    recalib_batches: int = 20,
    seed: int = 0,
    device: str = "auto",
    allow_other_split: bool = False,
    progress: bool = False,
    log: Log = None,
    **method_options,
) -> Model:
    """A pruned copy of `model` (the input is not changed): prune to config's target along
    `schedule` (default one-shot), fine-tuning `finetune.epochs` after each step on data.train and
    deciding on data.val, then `final_epochs` more (distilled with `distill`). `data` at another
    input size than the model's fine-tunes the cut at that size (the resolution lever). The record
    (asked, achieved, steps, accuracies) is `pruned.pruning`.

    `config` is a pruning config (`ep.TaylorChannel(target=0.5)`) or, as on the command line, a
    method name with its target and options (`"taylor-channel", target=0.5, round_to=8`); the job
    is built by the command's rules either way (prune_job)."""
    job = prune_job(config, target=target, target_kind=target_kind, latency_budget_ms=latency_budget_ms,
                    schedule=schedule, steps=steps, finetune=finetune, max_drop=max_drop, distill=distill,
                    final_epochs=final_epochs, recalib_batches=recalib_batches, seed=seed, **method_options)
    dev = resolve_device(device)
    outcome = _prune_workflow(model, job, data, device=dev, progress=progress, log=log,
                              allow_other_split=allow_other_split)
    return Model(outcome.model.cpu().eval(), outcome.meta)


def evaluate(model: Model, data: DataBundle, split: str = "test", *, allow_other_split: bool = False) -> EvalResult:
    """Accuracy, balanced accuracy, per-class recall and confusion matrix on one split of `data`
    (refused on another split of the model's own training data, see allow_other_split)."""
    if split not in ("test", "val"):
        raise EdgepruneError(f"split must be test or val, got {split!r}")
    model.check_data(data, allow_other_split=allow_other_split)
    return _evaluate(model.module, getattr(data, split), mean=model.mean, std=model.std,
                     class_names=model.class_names)


def evaluate_shifted(model: Model, data: DataBundle, shifts: str | Sequence[str] | None = None,
                     severities: str | Sequence[int] | None = None, *, split: str = "test", seed: int = 0,
                     allow_other_split: bool = False, log: Log = None) -> RobustnessResult:
    """Accuracy on one split of `data` clean and under shifted images (brightness, darkness,
    contrast, Gaussian noise, blur, JPEG; default all, severities 1-3), each shift applied to the
    uint8 images before the model's normalisation, noise seeded by `seed`. Typed result: per
    shift and severity, the clean accuracy and the mean relative drop (see
    edgeprune.metrics.robustness for the parameters of each severity)."""
    from edgeprune.metrics.robustness import evaluate_shifted as _evaluate_shifted

    if split not in ("test", "val"):
        raise EdgepruneError(f"split must be test or val, got {split!r}")
    model.check_data(data, allow_other_split=allow_other_split)
    return _evaluate_shifted(model, getattr(data, split), shifts=shifts, severities=severities, seed=seed,
                             log=log)


def measure(model: Model, data: DataBundle | None = None, *, threads: int = 1, runs: int = 20,
            memory: bool = True, log: Log = None) -> Measurement:
    """What the model achieves on this machine's CPU: parameters, MACs, sizes, latency (PyTorch
    and ONNX Runtime, batch 1 and 64, `threads` threads), peak memory, test accuracy with `data`."""
    if data is not None:
        model.check_data(data)
    values = _measure_module(model.module, input_size=model.input_size, data=data, threads=threads,
                             runs=runs, memory=memory, mean=model.mean, std=model.std, log=log)
    values["split"] = data.split.to_dict() if data is not None and data.split is not None else None
    return Measurement.from_dict(values)


def export_model(model: Model, path: str | Path, format: str = "onnx", *, data: DataBundle | None = None,
                 threads: int = 1, calibration_images: int = 300, calibrate_method: str = "minmax",
                 max_drop: float = 1.0, operating_point: str | None = None,
                 ok_classes: Sequence[str] | None = None, overwrite: bool = False, log: Log = None) -> ExportResult:
    """Write a deployable artifact (`onnx`, `onnx-int8`, `sparse`) and verify it against the model
    on data's test images (random inputs without data). INT8 needs data (its training split
    calibrates) and is refused (file set aside as FILE.rejected) when its test accuracy is more
    than `max_drop` points below the FP32 model's. `operating_point` (`defect_recall=R` or
    `ok_threshold=T`, with the `ok_classes`) chooses the OK/DEFECT threshold on data's validation
    split through the written file and stores it in the artifact. An existing file at `path` (or
    its report) is replaced only with `overwrite`."""
    set_threads(threads)
    return _export_workflow.export_model(
        model, path, format, data=data, threads=threads, calibration_images=calibration_images,
        calibrate_method=calibrate_method, max_drop=max_drop, operating_point=operating_point,
        ok_classes=tuple(ok_classes) if ok_classes else None, overwrite=overwrite, log=log)


def bench(artifacts: Sequence[str | Path], data: DataBundle | DataOptions | str | None = None, *,
          threads: int = 1, budget_s: float = 2.0, runtimes: str | Sequence[str] | None = None,
          log: Log = None) -> list[BenchRow]:
    """Accuracy, size, latency at batch 1 and 64 and achieved GMAC/s of saved artifacts
    (checkpoint folders, .onnx files, sparse files), side by side, one row per ONNX backend in
    `runtimes` (None: every installed one); `rows_frame(rows)` for pandas."""
    rows = bench_artifacts(list(artifacts), data=data, threads=threads, budget_s=budget_s,
                           runtimes=runtimes, log=log)
    return [BenchRow.from_dict(row) for row in rows]
