"""The training / fine-tuning loop shared by `train`, `prune` and the study runner."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn import functional as F

from edgeprune.errors import EdgepruneError
from edgeprune.hardware import seed_everything

OPTIMIZERS = ("adam", "sgd")
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}  # Adam 1e-3: the earlier studies' recipe


@dataclass
class TrainRecipe:
    """What `fit` did, stored in the checkpoint so a result can be reproduced."""

    epochs: int
    optimizer: str = "adam"
    lr: float | None = None  # None: the optimizer's default above
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int = 128
    schedule: str = "auto"  # auto: cosine for SGD, constant for Adam
    seed: int = 0

    def resolved(self) -> "TrainRecipe":
        if self.optimizer not in OPTIMIZERS:
            raise EdgepruneError(
                f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.epochs < 0:
            raise EdgepruneError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise EdgepruneError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise EdgepruneError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        lr = DEFAULT_LR[self.optimizer] if self.lr is None else self.lr
        if lr <= 0:
            raise EdgepruneError(f"learning rate must be > 0, got {lr}")
        schedule = self.schedule
        if schedule == "auto":
            schedule = "cosine" if self.optimizer == "sgd" else "constant"
        if schedule not in ("cosine", "constant"):
            raise EdgepruneError(f"unknown lr schedule {schedule!r}: auto, cosine or constant")
        return TrainRecipe(**{**asdict(self), "lr": lr, "schedule": schedule})

    def to_dict(self) -> dict:
        return asdict(self)


def _make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        params, lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay
    )


def distillation_loss(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    hard_loss: torch.Tensor,
    *,
    weight: float,
    temperature: float,
) -> torch.Tensor:
    """(1 - weight) * hard_loss + weight * T^2 * KL(teacher_T || student_T) (Hinton et al. 2015);
    T^2 keeps the soft term's gradients on the hard term's scale."""
    soft = F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2
    return (1.0 - weight) * hard_loss + weight * soft


def fit(
    model: nn.Module,
    data,
    recipe: TrainRecipe,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    after_step: Callable[[], None] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    description: str = "train",
    teacher: nn.Module | None = None,
    distill_weight: float = 0.5,
    temperature: float = 4.0,
) -> list[dict]:
    """Train `model` in place on `data.train`; evaluate on `data.val` after each epoch if present.

    teacher: knowledge distillation (Hinton et al. 2015) — the loss becomes
    (1 - distill_weight) * cross-entropy + distill_weight * T^2 * KL(teacher_T || student_T),
    with both softmaxes at temperature T. Pruning fine-tunes the slim model against the dense one.

    after_step runs after every optimizer step (pruning uses it to keep pruned weights at zero).
    Returns one record per epoch: loss, train accuracy, val accuracy (or None), seconds.
    """
    from edgeprune.data import BatchLoader
    from edgeprune.metrics.evaluate import evaluate

    recipe = recipe.resolved()
    if recipe.epochs == 0:
        return []
    if len(data.train.labels) == 0:
        raise EdgepruneError("the training split is empty")
    seed_everything(recipe.seed)
    model.to(device)
    loader = BatchLoader(
        data.train,
        recipe.batch_size,
        mean=data.mean,
        std=data.std,
        train=True,
        device=device,
        seed=recipe.seed,
        drop_last=len(data.train.labels) > recipe.batch_size,  # no size-1 batches for BatchNorm
        flip=data.hflip,
    )
    optimizer = _make_optimizer(model, recipe)
    total_steps = recipe.epochs * len(loader)
    scheduler = None
    if recipe.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    if teacher is not None:
        if not 0.0 < distill_weight <= 1.0 or temperature <= 0:
            raise EdgepruneError(
                f"distillation needs 0 < weight <= 1 and temperature > 0, got {distill_weight}, {temperature}"
            )
        teacher = teacher.to(device).eval()

    def loss_of(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if teacher is None:
            return criterion(logits, y)
        with torch.no_grad():
            teacher_logits = teacher(x)
        return distillation_loss(logits, teacher_logits, criterion(logits, y),
                                 weight=distill_weight, temperature=temperature)

    history: list[dict] = []

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total_steps, stats="")
        for epoch in range(recipe.epochs):
            model.train()
            started = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in loader:
                optimizer.zero_grad(set_to_none=True)
                logits = model(x)
                loss = loss_of(logits, x, y)
                if not torch.isfinite(loss):
                    raise EdgepruneError(
                        f"training diverged (loss {loss.item()}) in epoch {epoch + 1}: "
                        "lower the learning rate"
                    )
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if after_step is not None:
                    after_step()
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                bar.update(
                    task,
                    advance=1,
                    stats=f"epoch {epoch + 1}/{recipe.epochs} loss {loss_sum / seen:.3f} "
                    f"acc {correct / seen:.3f}",
                )
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "val_accuracy": None,
                "seconds": time.perf_counter() - started,
                "lr_end": optimizer.param_groups[0]["lr"],
            }
            if len(data.val.labels) > 0:
                record["val_accuracy"] = evaluate(
                    model, data.val, mean=data.mean, std=data.std,
                    class_names=data.class_names, device=device,
                ).accuracy
            history.append(record)
            if log:
                val = record["val_accuracy"]
                log(
                    f"{description} epoch {epoch + 1}/{recipe.epochs}: loss {record['loss']:.4f}, "
                    f"train acc {record['train_accuracy']:.4f}"
                    + (f", val acc {val:.4f}" if val is not None else "")
                    + f" ({record['seconds']:.1f} s)"
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    model.eval()
    return history
