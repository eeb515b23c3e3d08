"""`edgeprune train` and `edgeprune evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeprune.cli.app import AugmentOpt, BalanceOpt, DeviceOpt, JsonOpt, OverwriteOpt, ThreadsOpt, app, console
from edgeprune.cli.common import (
    DataRequest, data_options, load_data_for_checkpoint, load_data_logged, log, warn, warn_if_chance,
)


@app.command()
@data_options(exclude=("allow_other_split",))
def train(
    model: Annotated[str, typer.Option("--model", help="mobilenet_v2, resnet18 or vgg16.")] = "mobilenet_v2",
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="none (random init), imagenet (torchvision weights from the torch hub cache, "
            "no download) or PATH to a state_dict / safetensors file.",
        ),
    ] = "none",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 5,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")] = Path("runs/baseline"),
    overwrite: OverwriteOpt = False,
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="sgd (Nesterov momentum, warm-up then cosine decay) or adam (constant lr).")
    ] = "sgd",
    lr: Annotated[float | None, typer.Option("--lr", help="Default: 0.01 for SGD, 1e-3 for Adam.")] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.0,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing")] = 0.0,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Default: 128, halved down to 16 while an epoch "
                     "would have fewer than 32 steps (small data sets need the steps)."),
    ] = None,
    width_mult: Annotated[float, typer.Option("--width-mult", help="MobileNetV2 width multiplier.")] = 1.0,
    augment: AugmentOpt = "none",
    balance: BalanceOpt = "none",
    threads: ThreadsOpt = 2,
    device: DeviceOpt = "auto",
    request: DataRequest = DataRequest(),
) -> None:
    """Train a baseline classifier and save it as a checkpoint folder."""
    from edgeprune.hardware import resolve_device, set_threads
    from edgeprune.outputs import check_output_folder
    from edgeprune.train import TrainRecipe
    from edgeprune.validation import check_option
    from edgeprune.workflows.train import train_baseline

    # Options and the output folder before anything is loaded or trained.
    check_output_folder(out, overwrite=overwrite, what="--out")
    check_option("width_mult", width_mult)
    dev = resolve_device(device)
    n_threads = set_threads(threads)
    options = request.options()
    if request.normalization is None:  # pretrained weights expect the statistics they were trained with
        options = options.replace(normalization="imagenet" if weights == "imagenet" else "cifar")
    recipe = TrainRecipe(
        epochs=epochs, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
        label_smoothing=label_smoothing, batch_size=batch_size, seed=options.seed,
        augment=augment, balance=balance,
    ).resolved()
    dataset = load_data_logged(options)
    recipe = recipe.resolved(len(dataset.train.labels))  # the batch size depends on the data
    log(f"training {model} ({weights} weights) on {dev} with {n_threads} threads: {recipe}")
    _, meta, result = train_baseline(
        dataset, arch=model, recipe=recipe, weights=weights, width_mult=width_mult,
        device=dev, out=out, overwrite=overwrite, log=log,
    )
    kept = meta.training["kept_epoch"]
    console.print(
        f"test accuracy {result.accuracy:.4f} (balanced {result.balanced_accuracy:.4f}) on "
        f"{result.n} test images of {dataset.name}, with the weights of epoch {kept}/{recipe.epochs}"
        f"{' (best validation accuracy)' if meta.metrics['val_accuracy'] is not None else ''}; "
        f"checkpoint written to {out}"
    )
    if meta.metrics["chance_level_warning"]:
        warn(f"test {meta.metrics['chance_level_warning']}")


@app.command()
@data_options(exclude=("image_size", "normalization"))
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (model.safetensors + model.json).")],
    split: Annotated[str, typer.Option("--split", help="test or val.")] = "test",
    threads: ThreadsOpt = 2,
    device: DeviceOpt = "auto",
    shifts: Annotated[bool, typer.Option(
        "--shifts", help="Also evaluate under shifted images (brightness, darkness, contrast, Gaussian "
        "noise, blur, JPEG: the risks of a factory line; see --shift, --severities).")] = False,
    shift: Annotated[list[str] | None, typer.Option(
        "--shift", help="Only this shift (repeatable; implies --shifts): brightness, darkness, contrast, "
        "gaussian_noise, gaussian_blur, jpeg.", show_default="all")] = None,
    severities: Annotated[str | None, typer.Option(
        "--severities", help="Comma-separated severities, 0 (clean) to 3 (strong); implies --shifts.",
        show_default="1,2,3")] = None,
    shift_seed: Annotated[int, typer.Option("--shift-seed", min=0, help="Seed of the shifts' noise.")] = 0,
    as_json: JsonOpt = False,
    request: DataRequest = DataRequest(),
) -> None:
    """Accuracy, balanced accuracy, per-class recall and confusion matrix of a checkpoint; with
    --shifts also its accuracy under shifted images at each severity (the shift is applied to the
    uint8 images before normalisation; the parameters per severity are in
    edgeprune.metrics.robustness)."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.hardware import resolve_device, set_threads
    from edgeprune.models import load_checkpoint
    from edgeprune.metrics import evaluate as evaluate_model

    if split not in ("test", "val"):
        raise EdgepruneError(f"--split must be test or val, got {split!r}")
    robustness_asked = shifts or bool(shift) or severities is not None
    if robustness_asked:  # bad names refused before any data is loaded
        from edgeprune.metrics.robustness import parse_severities, parse_shifts

        chosen_shifts = [s.name for s in parse_shifts(shift or None)]
        chosen_severities = parse_severities(severities)
    dev = resolve_device(device)
    set_threads(threads)
    model, meta = load_checkpoint(checkpoint, dev)
    dataset, split_warning = load_data_for_checkpoint(request, meta, str(checkpoint))
    result = evaluate_model(
        model, getattr(dataset, split), mean=meta.mean, std=meta.std,
        class_names=meta.class_names, device=dev,
    )
    chance = warn_if_chance(result.accuracy, len(meta.class_names), split)
    robustness = None
    if robustness_asked:
        from edgeprune.metrics.robustness import evaluate_shifted

        log(f"evaluating under {len(chosen_shifts)} shift(s) x {len(chosen_severities)} severities")
        robustness = evaluate_shifted(
            model, getattr(dataset, split), shifts=chosen_shifts, severities=chosen_severities,
            seed=shift_seed, mean=meta.mean, std=meta.std, class_names=meta.class_names, device=dev,
            log=log)
    if as_json:
        from edgeprune.hardware import device_label

        payload = {"checkpoint": str(checkpoint), "data": dataset.name, "evaluated_on": split,
                   "split": dataset.split.to_dict(), "split_warning": split_warning,
                   "chance_level_warning": chance,
                   "device": str(dev), "device_label": device_label(dev), "threads": threads,
                   "notes": dataset.notes, **result.to_dict(),
                   "robustness": robustness.to_dict() if robustness is not None else None}
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table(title=f"{checkpoint} on {dataset.name} ({split}, {result.n} images)")
    table.add_column("class")
    table.add_column("recall", justify="right")
    for name, recall in result.per_class_recall.items():
        table.add_row(name, "n/a" if recall is None else f"{recall:.4f}")
    table.add_row("[bold]accuracy", f"[bold]{result.accuracy:.4f}")
    table.add_row("[bold]balanced accuracy", f"[bold]{result.balanced_accuracy:.4f}")
    console.print(table)
    if robustness is not None:
        console.print(robustness_table(robustness, f"{checkpoint} under shifted {split} images", dev, threads))
    if split_warning:
        warn(split_warning)


def robustness_table(result, title: str, device, threads: int) -> Table:
    """One row per shift: accuracy at each severity, the mean over severities above 0."""
    from edgeprune.hardware import device_label
    from edgeprune.metrics.robustness import SHIFTS

    table = Table(title=f"{title} ({result.n} images; {device_label(device)}, {threads} thread(s))")
    table.add_column("shift")
    table.add_column("parameter at severity 1, 2, ...")
    for severity in result.severities:
        table.add_column(f"severity {severity}", justify="right")
    table.add_column("mean", justify="right")
    means = result.mean_accuracy_by_shift()
    for name in result.shifts:
        table.add_row(name, SHIFTS[name].describe_levels(),
                      *(f"{result.accuracy(name, s):.2%}" for s in result.severities), f"{means[name]:.2%}")
    drop = result.mean_relative_drop
    table.caption = (f"clean accuracy {result.clean_accuracy:.2%} (balanced {result.clean_balanced_accuracy:.2%}); "
                     f"mean relative drop {'n/a' if drop is None else f'{drop:.1%}'}; noise seed {result.seed}")
    table.caption_justify = "left"
    return table
