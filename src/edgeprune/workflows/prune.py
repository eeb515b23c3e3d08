"""Prune a checkpoint end to end: load, prune along a schedule with batch-norm recalibration and
fine-tuning, decide on the validation split, report on the test split, save. Shared by
`edgeprune prune`, the demo and the frontier benchmark."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgeprune.data import BatchLoader
from edgeprune.errors import EdgepruneError
from edgeprune.hardware import device_label, seed_everything
from edgeprune.data import check_same_split
from edgeprune.models import CheckpointMeta, Model, ensure_same_classes, load_checkpoint, save_checkpoint
from edgeprune.pruning import (
    METHODS, PruneResult, PruningConfig, Schedule, make_config, prune_iteratively, recalibrate_batchnorm,
)
from edgeprune.metrics import evaluate
from edgeprune.outputs import check_output_folder
from edgeprune.train import TrainRecipe, fit
from edgeprune.train.loop import check_batch_norm_batches
from edgeprune.validation import check_option


def _asked(config: PruningConfig) -> str:
    budget = getattr(config, "latency_budget_ms", None)
    if budget is not None:
        return f"a {budget:g} ms batch-1 latency budget"
    kind = getattr(config, "target_kind", "weights")
    return f"{config.amount} ({kind})"


@dataclass
class PruneJob:
    config: PruningConfig
    schedule: Schedule
    finetune: TrainRecipe  # epochs = fine-tuning epochs after each step
    max_drop: float | None = None
    recalib_batches: int = 20  # training batches for batch-norm recalibration (0: off)
    seed: int = 0
    distill: bool = False  # fine-tune against the unpruned model's soft outputs
    # Fine-tuning after the last step (one cosine schedule, the best validation epoch kept; with
    # distill against the dense model too): a deep cut at a camera's resolution needs more epochs
    # than one per step. The per-epoch history is recorded (`final_finetune`).
    final_epochs: int = 0

    @classmethod
    def from_options(
        cls,
        method: str,
        target: float | None = None,
        *,
        target_kind: str | None = None,
        latency_budget_ms: float | None = None,
        schedule: str = "oneshot",
        steps: int | None = None,
        finetune: TrainRecipe | None = None,
        max_drop: float | None = None,
        recalib_batches: int = 20,
        seed: int = 0,
        distill: bool = False,
        final_epochs: int = 0,
        **method_options: Any,
    ) -> "PruneJob":
        """The job that `edgeprune prune`'s options describe, by one set of rules for every caller:
        - the target is 0.5 when neither it nor a latency budget is given;
        - channel methods count the target in parameters unless `target_kind` says otherwise;
        - `latency_budget_ms` means `target_kind` latency and excludes a target; the latency_*
          options go with it only;
        - a schedule other than one-shot takes 3 steps unless `steps` says otherwise;
        - `method_options` (round_to, min_channels, num_batches, per_layer, scoring, scope,
          latency_runtime, ...) that do not apply to `method` are an error (make_config).
        The pruning seed is `seed` for methods that draw at random."""
        fields = METHODS[method].__dataclass_fields__ if method in METHODS else {}
        latency_options = {k: method_options.get(k) for k in ("latency_runtime", "latency_threads", "latency_min_keep")}
        if latency_budget_ms is not None:
            if target_kind not in (None, "latency"):
                raise EdgepruneError("--latency-budget-ms goes with --target-kind latency")
            if target is not None:
                raise EdgepruneError("give either --target or --latency-budget-ms, not both")
            target_kind = "latency" if "target_kind" in fields else None
        elif target is None:
            target = 0.5
        if target_kind is None and "target_kind" in fields:
            target_kind = "params"
        if target_kind != "latency" and any(v is not None for v in latency_options.values()):
            raise EdgepruneError("--latency-runtime, --latency-threads and --latency-min-keep go with "
                                 "--target-kind latency")
        config = make_config(method, target, latency_budget_ms=latency_budget_ms, target_kind=target_kind,
                             seed=seed if "seed" in fields else None, **method_options)
        return cls(config=config, schedule=Schedule(schedule, steps if steps is not None else
                                                    (1 if schedule == "oneshot" else 3)),
                   finetune=finetune or TrainRecipe(epochs=1, seed=seed), max_drop=max_drop,
                   recalib_batches=recalib_batches, seed=seed, distill=distill, final_epochs=final_epochs)

    def __post_init__(self) -> None:
        self.max_drop = check_option("max_drop", self.max_drop, optional=True)
        self.recalib_batches = check_option("recalib_batches", self.recalib_batches)
        self.seed = check_option("seed", self.seed)
        self.final_epochs = check_option("epochs", self.final_epochs) if self.final_epochs else 0
        for name, kind in (("config", PruningConfig), ("schedule", Schedule), ("finetune", TrainRecipe)):
            if not isinstance(getattr(self, name), kind):
                raise EdgepruneError(f"PruneJob.{name} must be a {kind.__name__}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class FinalFinetune:
    """The fine-tune after the last step: its epochs and the per-epoch curve (`fit`'s history)."""

    epochs: int
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "history": self.history}


@dataclass(frozen=True)
class PruneRecord:
    """What a pruning run did beyond the cut itself (`PruneResult`): the accuracies before and
    after on both splits, the fine-tuning, the data and the cost. `to_dict()` is what the
    checkpoint's metadata keeps under `pruning`, the cut's figures and these together."""

    result: PruneResult
    baseline_val_accuracy: float | None
    baseline_test_accuracy: float
    val_accuracy: float | None
    test_accuracy: float
    source_checkpoint: str
    split: dict[str, Any] | None
    split_note: str | None
    finetune: dict[str, Any]
    final_finetune: FinalFinetune | None
    recalib_batches: int
    device: str
    input_size_from: int | None  # the resolution lever: the input size the model was trained at
    seconds: float
    previous: dict[str, Any] | None  # the checkpoint's earlier pruning, when it was pruned already

    def to_dict(self) -> dict[str, Any]:
        out = self.result.to_dict()
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "result"})
        out["final_finetune"] = self.final_finetune.to_dict() if self.final_finetune else None
        return out


@dataclass
class PruneOutcome:
    model: nn.Module
    meta: CheckpointMeta
    result: PruneResult
    record: PruneRecord  # record.to_dict() is what went into meta.pruning

    @property
    def pruned(self) -> Model:
        """The pruned network with its metadata, as the Python API passes models around."""
        return Model(self.model, self.meta)


def prune_checkpoint(
    checkpoint: str | Path,
    job: PruneJob,
    data,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    allow_other_split: bool = False,
) -> PruneOutcome:
    """prune_model on a checkpoint folder, saving the result to `out` (checked to reload).
    `out` is checked before any work: never the checkpoint itself (nor inside or around it), an
    existing checkpoint only with overwrite."""
    if out is not None:
        check_output_folder(out, inputs=(checkpoint,), overwrite=overwrite, what="checkpoint folder")
    model = Model.load(checkpoint, device)
    outcome = prune_model(model, job, data, device=device, progress=progress, log=log,
                          allow_other_split=allow_other_split, source=Path(checkpoint).name,
                          in_place=True)  # freshly loaded: nobody else holds it
    if out is not None:
        save_checkpoint(outcome.model.cpu(), outcome.meta, out, overwrite=overwrite, inputs=(checkpoint,))
        reloaded, _ = load_checkpoint(out)  # the saved checkpoint must load as is
        if sum(p.numel() for p in reloaded.parameters()) != outcome.result.params:
            raise EdgepruneError(f"internal: {out} reloads with a different parameter count")
        outcome.model.to(device)
    return outcome


def prune_model(
    model: Model,
    job: PruneJob,
    data,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    allow_other_split: bool = False,
    source: str | None = None,
    in_place: bool = False,
) -> PruneOutcome:
    """Prune a copy of `model` (with in_place, the model itself: no second copy of the weights)
    along job's schedule, fine-tuning and deciding on `data`'s validation
    split and reporting on its test split. `data` must be the model's own split of its data (or
    other data), never another split of the same data unless allow_other_split."""
    started = time.perf_counter()
    say = log or (lambda _m: None)
    seed_everything(job.seed)
    recipe = job.finetune.resolved(len(data.train.labels))  # an automatic batch size needs the data
    meta = model.meta
    checkpoint = source or meta.architecture
    ensure_same_classes(meta, data.class_names, data.name)
    input_size_from = None
    if data.image_size != meta.input_size:
        # The resolution lever: a CNN with global pooling runs at any input size, so the pruned
        # model is fine-tuned (and from then on runs) at the data's size. Fewer pixels cost
        # compute in every layer, where fewer channels cost it in the pruned ones only.
        input_size_from = meta.input_size
        say(f"the pruned model takes {data.image_size}x{data.image_size} input (trained at "
            f"{meta.input_size}x{meta.input_size}): it is fine-tuned at the new size")
        meta = dataclasses.replace(meta, input_size=data.image_size)
    split_note = check_same_split(meta.split, data.split, allow_other_split=allow_other_split,
                                  what=checkpoint) if data.split is not None else None
    # Recalibration, Taylor's gradients and fine-tuning all run batch norm in training mode.
    check_batch_norm_batches(model.module, recipe.batch_size, len(data.train.labels))
    model = (model.module if in_place else copy.deepcopy(model.module)).to(device)
    teacher = copy.deepcopy(model).eval() if job.distill else None
    # Always the checkpoint's normalisation, whatever the data loader would compute.
    data = dataclasses.replace(data, mean=tuple(meta.mean), std=tuple(meta.std))
    has_val = len(data.val.labels) > 0
    if job.max_drop is not None and not has_val:
        raise EdgepruneError("--max-drop decides on a validation split: use --val-fraction > 0")
    if meta.pruning:
        say(f"warning: {checkpoint} is already pruned ({meta.pruning.get('method')}); pruning it further")

    def accuracy_on(split, m) -> float:
        return evaluate(m, split, mean=meta.mean, std=meta.std, class_names=meta.class_names,
                        device=device).accuracy

    def train_batches(seed_offset: int) -> BatchLoader:
        return BatchLoader(
            data.train, recipe.batch_size, mean=meta.mean, std=meta.std, train=True,
            device=device, seed=job.seed + seed_offset,
            drop_last=len(data.train.labels) > recipe.batch_size, flip=data.hflip,
        )

    def recalibrate(m) -> None:
        recalibrate_batchnorm(m, train_batches(7919), max_batches=job.recalib_batches)

    def fine_tune(m, step) -> None:
        if recipe.epochs == 0:
            return
        fit(m, data, dataclasses.replace(recipe, seed=job.seed + step.index), device=device,
            after_step=step.after_step, log=log, progress=progress, teacher=teacher,
            description=f"fine-tune {step.index}/{step.of}")

    baseline_val = accuracy_on(data.val, model) if has_val else None
    baseline_test = accuracy_on(data.test, model)
    say(
        f"pruning {meta.architecture} from {checkpoint} on {device}: {job.config.method} to "
        f"{_asked(job.config)}, {job.schedule.kind} x{job.schedule.steps}, {recipe.epochs} fine-tune "
        f"epoch(s) per step; baseline val "
        f"{'n/a' if baseline_val is None else f'{baseline_val:.4f}'}, test {baseline_test:.4f}"
    )
    example = torch.zeros(1, 3, meta.input_size, meta.input_size, device=device)
    result = prune_iteratively(
        model, job.config, job.schedule, example_inputs=example, fine_tune=fine_tune,
        evaluate=(lambda m: accuracy_on(data.val, m)) if has_val else None,
        max_drop=job.max_drop, baseline_accuracy=baseline_val,
        recalibrate=recalibrate if job.recalib_batches > 0 else None,
        batches=train_batches(104729), log=log,
    )
    pruned = result.model
    final_history = None
    if job.final_epochs:
        keep_zeros = None
        if not job.config.structured:  # zeroed weights stay zero, as in each step's fine-tune
            masks = [(p, p != 0) for p in pruned.parameters() if p.dim() > 1]

            def keep_zeros() -> None:
                with torch.no_grad():
                    for param, mask in masks:
                        param.mul_(mask)

        final_history = fit(pruned, data, dataclasses.replace(recipe, epochs=job.final_epochs,
                                                              seed=job.seed + 7),
                            device=device, log=log, progress=progress, teacher=teacher,
                            after_step=keep_zeros, description="final fine-tune")
    final_test = accuracy_on(data.test, pruned)
    final_val = accuracy_on(data.val, pruned) if has_val else None
    record = PruneRecord(
        result=result, baseline_val_accuracy=baseline_val, baseline_test_accuracy=baseline_test,
        val_accuracy=final_val, test_accuracy=final_test, source_checkpoint=checkpoint,
        split=data.split.to_dict() if data.split is not None else None, split_note=split_note,
        finetune={**recipe.to_dict(), "epochs_per_step": recipe.epochs, "distill": job.distill},
        final_finetune=(FinalFinetune(job.final_epochs, final_history) if final_history is not None else None),
        recalib_batches=job.recalib_batches, device=device_label(device), input_size_from=input_size_from,
        seconds=time.perf_counter() - started, previous=meta.pruning or None,
    )
    new_meta = dataclasses.replace(
        meta,
        pruning=record.to_dict(),
        metrics={"test_accuracy": final_test, "val_accuracy": final_val,
                 "dense_test_accuracy": baseline_test},
        data={**meta.data, "name": data.name, "kind": data.kind},
        # Fine-tuned on other data: that data's test split is the one it must not be evaluated
        # on another split of from now on.
        split=data.split.to_dict()
        if data.split is not None and meta.split.get("fingerprint") != data.split.fingerprint
        else meta.split,
    )
    return PruneOutcome(pruned, new_meta, result, record)
