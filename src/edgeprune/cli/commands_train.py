"""`edgeprune train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeprune.cli.app import AugmentOpt, BalanceOpt, DeviceOpt, OverwriteOpt, ThreadsOpt, app, console
from edgeprune.cli.common import (
    DataRequest, data_options, load_data_logged, log, warn,
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
