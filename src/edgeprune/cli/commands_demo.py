"""`edgeprune demo`: the main job on the bundled digits data, no download needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeprune.cli.app import DeviceOpt, ThreadsOpt, app, console
from edgeprune.cli.common import log


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's checkpoints.")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 8,
    threads: ThreadsOpt = 2,
    device: DeviceOpt = "auto",
) -> None:
    """Train a MobileNetV2 on scikit-learn's digits, measure it and print what was achieved."""
    from edgeprune.cli.commands_measure import render_measurements
    from edgeprune.experiments.demo import run_demo

    result = run_demo(out, epochs=epochs, threads=threads, device=device, log=log)
    console.print(render_measurements({"baseline (MobileNetV2, digits)": result["baseline"]}))
