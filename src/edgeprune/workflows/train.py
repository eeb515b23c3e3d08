"""Train a baseline classifier end to end: build, fit, evaluate on test, save a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from edgeprune.hardware import seed_everything
from edgeprune.models import CheckpointMeta, create_model, save_checkpoint
from edgeprune.metrics.chance import chance_level_warning
from edgeprune.metrics.evaluate import EvalResult, evaluate
from edgeprune.outputs import check_output_folder
from edgeprune.train import TrainRecipe, fit, kept_epoch


def train_baseline(
    data,
    *,
    arch: str,
    recipe: TrainRecipe,
    weights: str = "none",
    width_mult: float = 1.0,
    device: torch.device | str = "cpu",
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, CheckpointMeta, EvalResult]:
    """The model holds the best validation epoch's weights (see `fit`); meta.training records
    which (`kept_epoch`). A test accuracy at chance level gives a message in
    meta.metrics["chance_level_warning"] (None above chance) for the caller to show.

    out: the checkpoint folder to write, checked before the training (an existing checkpoint is
    replaced only with overwrite); written whole or not at all."""
    if out is not None:
        check_output_folder(out, overwrite=overwrite, what="checkpoint folder")
    recipe = recipe.resolved(len(data.train.labels))
    # Seeded here, not only in fit: the random initialisation (and a new head) is part of the run.
    seed_everything(recipe.seed)
    model = create_model(
        arch, len(data.class_names), weights, width_mult=width_mult, log=log
    )
    history = fit(model, data, recipe, device=device, progress=progress, log=log)
    result = evaluate(
        model, data.test, mean=data.mean, std=data.std, class_names=data.class_names, device=device
    )
    kept = kept_epoch(history)
    warning = chance_level_warning(result.accuracy, len(data.class_names))
    meta = CheckpointMeta(
        architecture=arch,
        class_names=list(data.class_names),
        input_size=data.image_size,
        mean=list(data.mean),
        std=list(data.std),
        width_mult=width_mult,
        training={
            **recipe.to_dict(),
            "weights": weights,
            "device": str(device),
            "kept_epoch": kept,
            "history": history,
        },
        metrics={
            "test_accuracy": result.accuracy,
            "test_balanced_accuracy": result.balanced_accuracy,
            "val_accuracy": history[kept - 1]["val_accuracy"] if history else None,
            "chance_level_warning": warning,
        },
        data={"name": data.name, "kind": data.kind, "notes": list(data.notes)},
        split=data.split.to_dict() if data.split is not None else {},
    )
    if out is not None:
        save_checkpoint(model.cpu(), meta, out, overwrite=overwrite)
    return model, meta, result
