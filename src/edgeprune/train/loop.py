"""The training / fine-tuning loop shared by `train`, `prune` and the study runner."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn import functional as F

from edgeprune.data.augment import check_augment
from edgeprune.data.loader import check_balance
from edgeprune.errors import EdgepruneError
from edgeprune.hardware import seed_everything
from edgeprune.validation import check_option

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
# SGD 0.01 with Nesterov momentum 0.9 (an effective step of 0.1) and cosine decay: the recipe the
# frontier benchmark uses on CIFAR-10 and the README on ImageNet-initialised tiles. Adam 1e-3
# (the earlier studies' default) is kept for --optimizer adam.
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
# Why these defaults (MobileNetV2 from scratch, digits, `--epochs 3`, test accuracy, seeds 0/1/2):
# the old default, Adam 1e-3 constant with batch 128, gives digits' 1,293 training images 10
# optimizer steps an epoch, 30 in all: train accuracy 24%, and the batch-norm running averages
# (momentum 0.1) still trail the fast-moving weights, so eval mode answers one class (10.0%).
# Batch 32 (120 steps): Adam constant 59/47/47%, Adam cosine 29/47/36%, SGD cosine 89/89/81%;
# SGD cosine with batch 64 (60 steps) 13/23/10%, batch 16: 86/83/86%. The steps are what is
# missing, so small data sets get smaller batches; large ones keep 128.
MAX_BATCH_SIZE = 128
MIN_BATCH_SIZE = 16
MIN_STEPS_PER_EPOCH = 32
# Linear warm-up over 5% of the steps (at most one epoch) before the cosine decay: momentum SGD
# at full lr on a random init is the step most likely to blow up. Small on digits (85.0% mean
# without it, 86.5% with it), but cheap insurance for a user's higher --lr.
WARMUP_FRACTION = 0.05


def auto_batch_size(n_train: int) -> int:
    """The largest power of two in [16, 128] that still gives >= 32 steps an epoch on n_train
    images (16 when even that gives fewer)."""
    size = MAX_BATCH_SIZE
    while size > MIN_BATCH_SIZE and n_train // size < MIN_STEPS_PER_EPOCH:
        size //= 2
    return size


@dataclass
class TrainRecipe:
    """What `fit` did, stored in the checkpoint so a result can be reproduced."""

    epochs: int
    optimizer: str = "sgd"
    lr: float | None = None  # None: the optimizer's default above
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int | None = None  # None: auto_batch_size(training images), once the data is known
    # auto: cosine (after the warm-up) for SGD, constant for Adam. The decay also lets the weights
    # settle at the end, so the batch-norm running statistics match the weights evaluated.
    schedule: str = "auto"
    seed: int = 0
    # Photometric training augmentation (edgeprune.data.augment): "none" or "line" (lamp,
    # gain, focus and compression changes, matched to the robustness shifts).
    augment: str = "none"
    # Rare classes: "none", "loss" (class-weighted cross-entropy) or "sampler" (class-balanced
    # sampling with replacement), see edgeprune.data.loader.
    balance: str = "none"

    def __post_init__(self) -> None:
        # Every number checked when the recipe is built (CLI, study config or Python alike),
        # so a NaN learning rate fails now, not as a NaN checkpoint after the training.
        self.epochs = check_option("epochs", self.epochs)
        self.lr = check_option("lr", self.lr, optional=True)
        self.weight_decay = check_option("weight_decay", self.weight_decay)
        self.label_smoothing = check_option("label_smoothing", self.label_smoothing)
        self.batch_size = check_option("batch_size", self.batch_size, optional=True)
        self.seed = check_option("seed", self.seed)
        if self.optimizer not in OPTIMIZERS:
            raise EdgepruneError(
                f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in ("auto", *SCHEDULES):
            raise EdgepruneError(f"unknown lr schedule {self.schedule!r}: auto, cosine or constant")
        check_augment(self.augment)
        check_balance(self.balance)

    def resolved(self, n_train: int | None = None) -> "TrainRecipe":
        """Defaults filled in; the batch size too when `n_train` (training images) is given."""
        batch_size = self.batch_size
        if batch_size is None and n_train is not None:
            batch_size = auto_batch_size(n_train)
        lr = DEFAULT_LR[self.optimizer] if self.lr is None else self.lr
        schedule = self.schedule
        if schedule == "auto":
            schedule = "cosine" if self.optimizer == "sgd" else "constant"
        return TrainRecipe(**{**asdict(self), "lr": lr, "schedule": schedule, "batch_size": batch_size})

    def to_dict(self) -> dict:
        # The levers added later are left out at their defaults, so a recipe's dict (and the study
        # experiment keys hashed from it) stays what it was for every run made before them.
        values = asdict(self)
        for key in ("augment", "balance"):
            if values[key] == "none":
                del values[key]
        return values


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


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based). constant: 1. cosine: linear
    warm-up over `warmup_steps`, then cosine decay, reaching 0 just after the last step."""
    if schedule == "constant":
        return 1.0
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, decay_steps) / decay_steps))


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of a `fit` (restored afterwards: other code in the
    process may want the fast ones). On the CPU this costs next to nothing; on CUDA it disables
    cuDNN autotuning, and warn_only keeps ops without a deterministic kernel usable."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_batch_norm_batches(model: nn.Module, batch_size: int, n_train: int) -> None:
    """Batch norm normalises over the batch: in training a batch of one image has no variance
    (torch raises deep inside the forward pass). fit drops a last batch of one when it can."""
    if has_batch_norm(model) and min(batch_size, n_train) < 2:
        raise EdgepruneError(
            f"batch size {min(batch_size, n_train)} cannot train a model with batch-norm layers "
            f"(batch size {batch_size}, {n_train} training image(s)): use --batch-size 2 or more, "
            "with at least 2 training images"
        )


def first_non_finite(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding NaN or inf (None when all are finite)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def kept_epoch(history: list[dict]) -> int | None:
    """The 1-based epoch whose weights `fit` left in the model (None for an empty history)."""
    return next((r["epoch"] for r in history if r.get("kept")), history[-1]["epoch"] if history else None)


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
    keep_best: bool = True,
) -> list[dict]:
    """Train `model` in place on `data.train`; evaluate on `data.val` after each epoch if present.

    teacher: knowledge distillation (Hinton et al. 2015) — the loss becomes
    (1 - distill_weight) * cross-entropy + distill_weight * T^2 * KL(teacher_T || student_T),
    with both softmaxes at temperature T. Pruning fine-tunes the slim model against the dense one.

    after_step runs after every optimizer step (pruning uses it to keep pruned weights at zero).

    keep_best (with a validation split): the model ends with the weights of the epoch with the
    best validation accuracy (the later one on a tie), not the last epoch's. The snapshot is the
    state_dict of the model as trained here, so masked zeros and physically pruned shapes are
    what comes back.

    Runs are reproducible: everything random in here (dropout, shuffling, augmentation) is
    seeded from recipe.seed, and deterministic kernels are used. The weights' initialisation
    happens before `fit`: seed it there (train_baseline does).

    Returns one record per epoch: loss, train accuracy, val accuracy (or None), seconds, lr at
    the end, and `kept` (True for exactly one epoch: the one whose weights the model holds).
    """
    recipe = recipe.resolved(len(data.train.labels))
    if recipe.epochs == 0:
        return []
    if len(data.train.labels) == 0:
        raise EdgepruneError("the training split is empty")
    check_batch_norm_batches(model, recipe.batch_size, len(data.train.labels))
    if teacher is not None:
        check_option("distill_weight", distill_weight)
        check_option("temperature", temperature)
    broken = first_non_finite(model)
    if broken is not None:
        raise EdgepruneError(f"the model to train already holds NaN or infinite values (tensor {broken})")
    with deterministic():
        return _fit(model, data, recipe, device=device, progress=progress,
                    log=log, after_step=after_step, on_epoch_end=on_epoch_end,
                    description=description, teacher=teacher, distill_weight=distill_weight,
                    temperature=temperature, keep_best=keep_best)


def _fit(model, data, recipe, *, device, progress, log, after_step, on_epoch_end, description,
         teacher, distill_weight, temperature, keep_best) -> list[dict]:
    from edgeprune.data import BatchLoader, class_loss_weights
    from edgeprune.metrics.evaluate import evaluate

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
        augment=recipe.augment,
        balance=recipe.balance,
    )
    optimizer = _make_optimizer(model, recipe)
    total_steps = recipe.epochs * len(loader)
    warmup_steps = min(len(loader), int(WARMUP_FRACTION * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, recipe.schedule)
    )
    class_weights = None
    if recipe.balance == "loss":
        class_weights = class_loss_weights(data.train.labels, len(data.class_names)).to(device)
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=recipe.label_smoothing)
    if teacher is not None:
        teacher = teacher.to(device).eval()

    def loss_of(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if teacher is None:
            return criterion(logits, y)
        with torch.no_grad():
            teacher_logits = teacher(x)
        return distillation_loss(logits, teacher_logits, criterion(logits, y),
                                 weight=distill_weight, temperature=temperature)

    history: list[dict] = []
    has_val = len(data.val.labels) > 0
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_val = None, -1.0

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
                        "lower the learning rate; nothing was saved"
                    )
                loss.backward()
                optimizer.step()
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
                "kept": False,
            }
            # The loss is computed before each step, so the last step's update (or batch-norm
            # statistics from a bad batch) can still turn weights into NaN: check the weights too,
            # before they can be evaluated, kept or saved.
            broken = first_non_finite(model)
            if broken is not None:
                raise EdgepruneError(
                    f"training diverged in epoch {epoch + 1}: tensor {broken} holds NaN or infinite "
                    "values; lower the learning rate; nothing was saved"
                )
            if has_val:
                record["val_accuracy"] = evaluate(
                    model, data.val, mean=data.mean, std=data.std,
                    class_names=data.class_names, device=device,
                ).accuracy
                if keep_best and record["val_accuracy"] >= best_val:
                    # A copy of the model as it is now (masked, maybe physically slimmer than
                    # when it was built), so restoring it can never meet a shape mismatch.
                    best_val, best_epoch = record["val_accuracy"], epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
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
    if best_state is not None:
        # Restored even when the last epoch is the best: on_epoch_end may have changed the model.
        model.load_state_dict(best_state)
        if log:
            last = history[-1]["val_accuracy"]
            log(f"{description}: kept epoch {best_epoch}/{recipe.epochs}, best val acc {best_val:.4f}"
                + ("" if best_epoch == recipe.epochs else f" (the last epoch had {last:.4f})"))
    history[(best_epoch or recipe.epochs) - 1]["kept"] = True
    model.eval()
    return history
