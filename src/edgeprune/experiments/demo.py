"""The main job on the embedded default data (scikit-learn digits): no download, a few minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgeprune.hardware import resolve_device, set_threads

DEMO_EPOCHS = 8


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    epochs: int = DEMO_EPOCHS,
    threads: int = 2,
    measure_threads: int = 1,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train a MobileNetV2 baseline on digits, save it, measure it. Returns the measurements."""
    from edgeprune.data import load_data
    from edgeprune.metrics import measure
    from edgeprune.models import load_checkpoint
    from edgeprune.train import TrainRecipe, train_baseline

    out = Path(out_dir)
    dev = resolve_device(device)
    set_threads(threads)
    data = load_data("digits", image_size=32, val_fraction=0.1, seed=0, log=log)
    recipe = TrainRecipe(epochs=epochs, optimizer="adam", batch_size=64, seed=0)
    _, _, result = train_baseline(
        data, arch="mobilenet_v2", recipe=recipe, device=dev, out=out / "baseline",
        progress=progress, log=log,
    )
    model, meta = load_checkpoint(out / "baseline")
    if log:
        log(f"measuring the saved checkpoint on the CPU with {measure_threads} thread(s)")
    metrics = measure(model, input_size=meta.input_size, data=data, threads=measure_threads)
    return {"checkpoint": str(out / "baseline"), "test": result.to_dict(), "baseline": metrics}
