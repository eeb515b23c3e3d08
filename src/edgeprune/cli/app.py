"""The Typer application object and the options several commands share."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="edgeprune",
    help=(
        "Prune image classifiers (MobileNetV2, ResNet-18, VGG-16) for edge CPUs and prove the "
        "gains: every figure printed is what was achieved, measured on the named device."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect data sets before training on them.", no_args_is_help=True)
app.add_typer(data_app, name="data")

def _console(stderr: bool = False) -> Console:
    """Tables are wide (a bench row has 16 columns): when the output goes to a file or a pipe
    rather than a terminal, do not squeeze them into rich's default 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 200
    return Console(stderr=stderr, width=width)


console = _console()
console_err = _console(stderr=True)

# Options shared by several commands, so their names and help read the same everywhere.
DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="`digits` (bundled, offline), a torchvision CIFAR-10 root, an ImageFolder tree with "
        "train/ and test/, or one class-folder tree (split stratified with --seed).",
    ),
]
ImageSizeOpt = Annotated[int, typer.Option("--image-size", help="Square input size in pixels.")]
ValFractionOpt = Annotated[
    float,
    typer.Option(
        "--val-fraction",
        help="Fraction of the training data held out (stratified) for decisions during training "
        "and pruning; the test set is only used for reported figures.",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for splits, init and augmentation.")]
MaxPerClassOpt = Annotated[
    int | None,
    typer.Option("--max-per-class", min=1, help="Use at most the first N images per class of each split (quick runs)."),
]
DownloadOpt = Annotated[
    bool, typer.Option("--download", help="Allow downloading CIFAR-10 when the root is missing.")
]
SkipBadOpt = Annotated[
    bool,
    typer.Option("--skip-bad", help="Log and count unreadable images instead of stopping."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")
]
ThreadsOpt = Annotated[
    int, typer.Option("--threads", help="CPU threads for torch and ONNX Runtime.", min=1)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
