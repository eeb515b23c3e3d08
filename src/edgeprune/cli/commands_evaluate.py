"""`edgeprune evaluate`: a checkpoint's accuracy on its split, and under shifted images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeprune.cli.app import DeviceOpt, JsonOpt, ThreadsOpt, app, console
from edgeprune.cli.common import DataRequest, data_options, load_data_for_checkpoint, log, warn, warn_if_chance


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
