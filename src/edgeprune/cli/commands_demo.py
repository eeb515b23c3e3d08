"""`edgeprune demo`: the main job on the bundled digits data, no download needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeprune.cli.app import DeviceOpt, OverwriteOpt, app, console
from edgeprune.cli.common import log
from edgeprune.workflows.demo import DEMO_EPOCHS, DEMO_FINETUNE_EPOCHS, DEMO_THREADS


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's checkpoints and artifacts.")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Baseline training epochs.")] = DEMO_EPOCHS,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", min=0)] = DEMO_FINETUNE_EPOCHS,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for init, shuffling, augmentation, pruning and calibration "
                          "(the data split stays fixed, so seeds are compared on the same test images).")
    ] = 0,
    threads: Annotated[int, typer.Option(
        "--threads", min=1, help="Training threads. Part of the recipe: the same seed gives the same "
        "figures only with the same thread count (other counts sum in another order).")] = DEMO_THREADS,
    bench_threads: Annotated[int, typer.Option("--bench-threads", min=1, help="Threads for the timings.")] = 1,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a MobileNetV2 on scikit-learn's digits, prune half its parameters away, quantize it to
    INT8 ONNX, and bench the three side by side: every figure is what was achieved here. Also
    writes OUT/replay (test images, <class>/<image>.png) for a station to replay."""
    from edgeprune.cli.commands_export import render_bench
    from edgeprune.workflows.demo import run_demo

    result = run_demo(out, epochs=epochs, finetune_epochs=finetune_epochs, seed=seed, threads=threads,
                      bench_threads=bench_threads, device=device, overwrite=overwrite, log=log)
    compact = [("artifact", "artifact"), ("runtime", "runtime"), ("accuracy", "acc"),
               ("gzip_bytes", "gzip"), ("macs", "MACs"), ("b1_median_ms", "b1 ms"),
               ("b64_median_ms", "b64 ms"), ("gmacs_b64", "GMAC/s b64")]
    console.print(render_bench(result["bench"], compact))
    console.print("all columns (p90, peak memory, energy): edgeprune bench "
                  + " ".join(result["checkpoints"].values()) + " --data digits")
    console.print(f"checkpoints and artifacts in {out} (seed {seed}; the baseline keeps its best "
                  f"validation epoch, {result['kept_epoch']}/{epochs})")
    console.print("run a station on them, its dashboard on http://127.0.0.1:8080/ (every 7 is a "
                  "'defect'):", highlight=False)
    console.print(f"  edgeprune station run --model {result['checkpoints']['int8']} "
                  f"--source replay:{result['replay']} --rate 2 --ok-classes 0,1,2,3,4,5,6,8,9 "
                  f"--db {Path(out) / 'station.db'} --http 127.0.0.1:8080", highlight=False, soft_wrap=True)
