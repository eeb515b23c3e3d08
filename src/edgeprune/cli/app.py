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

# Options shared by several commands, so their names and help read the same everywhere (the data
# options are declared once in cli/common.py's data_options).
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")
]
ThreadsOpt = Annotated[
    int, typer.Option("--threads", help="CPU threads for torch and ONNX Runtime.", min=1)
]
AugmentOpt = Annotated[
    str, typer.Option("--augment", help="Photometric training augmentation: none, or line (per-image "
                      "brightness, contrast, sensor noise, defocus blur and JPEG, matched to "
                      "`evaluate --shifts`; see edgeprune.data.augment).")
]
BalanceOpt = Annotated[
    str, typer.Option("--balance", help="Rare classes: none, loss (class-weighted cross-entropy) or "
                      "sampler (each class drawn equally often).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace an existing result at --out (never an input, never a "
                 "folder holding anything but a checkpoint); without it an existing one is refused."),
]
