"""`edgeprune measure`: what a checkpoint achieves on this machine, as a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeprune.cli.app import JsonOpt, ThreadsOpt, app, console
from edgeprune.cli.common import DataRequest, data_options, load_data_for_checkpoint, log, warn_if_chance
from edgeprune.runtime.measure import DEFAULT_RUNS, DEFAULT_WARMUP


@app.command()
@data_options(default_spec=None, exclude=("image_size", "normalization"))
def measure(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="Checkpoint folder(s) (model.safetensors + model.json).", show_default=False),
    ],
    threads: ThreadsOpt = 1,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs per batch size.")] = DEFAULT_WARMUP,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per batch size.")] = DEFAULT_RUNS,
    runtime: Annotated[
        str | None,
        typer.Option("--runtime", help="ONNX backends to time beside PyTorch, comma-separated: "
                     "onnxruntime (default), openvino (the openvino extra), or both. Peak memory "
                     "is measured with ONNX Runtime."),
    ] = None,
    no_onnx: Annotated[
        bool, typer.Option("--no-onnx", help="Skip the ONNX backends (their latency and the peak memory).")
    ] = False,
    as_json: JsonOpt = False,
    request: DataRequest = DataRequest(),
) -> None:
    """Parameters, sparsity, MACs, file size, latency, peak memory, energy and (with --data)
    test accuracy, as achieved on this machine's CPU. --json prints one JSON object per line
    per checkpoint on stdout; progress goes to stderr."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.runtime.backends import parse_runtimes
    from edgeprune.workflows.measure import measure as measure_model
    from edgeprune.models import load_checkpoint

    if no_onnx and runtime is not None:
        raise EdgepruneError("--no-onnx and --runtime contradict each other: give one")
    # The runtime layer's parser: an unknown or uninstalled backend fails here, before any work.
    runtimes = ("torch",) if no_onnx else ("torch", *parse_runtimes(runtime or "onnxruntime"))
    results = []
    for checkpoint in checkpoints:
        model, meta = load_checkpoint(checkpoint)
        log(f"measuring {checkpoint} ({meta.architecture}, {meta.input_size}x{meta.input_size})")
        dataset, split_warning = None, None
        if request.spec is not None:  # decoded once per size and split thanks to the data cache
            dataset, split_warning = load_data_for_checkpoint(request, meta, str(checkpoint))
        result = measure_model(
            model, input_size=meta.input_size, data=dataset, threads=threads, runtimes=runtimes,
            warmup=warmup, runs=runs, mean=meta.mean, std=meta.std, log=log,
        )
        result = {"checkpoint": str(checkpoint), "architecture": meta.architecture, **result,
                  "split": dataset.split.to_dict() if dataset is not None else None,
                  "split_warning": split_warning,
                  "chance_level_warning": warn_if_chance(result["accuracy"], len(meta.class_names))}
        if as_json:
            typer.echo(json.dumps(result))
        results.append(result)
    if not as_json:
        console.print(results_table(results))


def _latency_cell(latency: dict | None, batch: str) -> str:
    if latency is None:
        return "skipped"
    stats = latency[batch]
    return f"{stats['median']:.3f} ({stats['p90']:.3f})"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def results_table(results: list[dict]) -> Table:
    """One column per measured model, one row per figure."""
    table = Table(title="measured on " + ", ".join(sorted({r["device"] for r in results})))
    table.add_column("metric")
    for result in results:
        table.add_column(f"{result['checkpoint']}\n({result['architecture']})", justify="right")

    batches = results[0]["timing"]["batch_sizes"]
    rows: list[tuple[str, Callable[[dict], str]]] = [
        ("parameters", lambda r: f"{r['params']:,}"),
        ("nonzero parameters", lambda r: f"{r['nonzero_params']:,}"),
        ("sparsity (all parameters)", lambda r: _percent(r["sparsity"])),
        ("weight sparsity (Conv2d/Linear)", lambda r: _percent(r["weight_sparsity"])),
        ("MACs / image", lambda r: f"{r['macs']:,}"),
        ("MACs on nonzero weights", lambda r: f"{r['macs_nonzero']:,}"),
        ("weights (safetensors)", lambda r: f"{r['size_bytes'] / 1e6:.3f} MB"),
        ("weights gzipped", lambda r: f"{r['size_gzip_bytes'] / 1e6:.3f} MB"),
    ]
    timed = [rt for rt in ("torch", "onnxruntime", "openvino")
             if rt in ("torch", "onnxruntime") or any(r["latency_ms"].get(rt) for r in results)]
    for runtime in timed:
        for batch in batches:
            rows.append(
                (
                    f"{runtime} ms/image, batch {batch}: median (p90)",
                    lambda r, rt=runtime, b=batch: _latency_cell(r["latency_ms"].get(rt), f"batch{b}"),
                )
            )
    rows += [
        (
            "peak inference memory (ONNX Runtime)",
            lambda r: "n/a" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 1e6:.1f} MB",
        ),
        ("test accuracy", lambda r: "n/a (no --data)" if r["accuracy"] is None else f"{r['accuracy']:.4f}"),
        (
            "energy / image",
            lambda r: "n/a" if r["energy_mj_per_image"] is None else f"{r['energy_mj_per_image']:.3f} mJ",
        ),
        ("threads", lambda r: str(r["threads"])),
        ("CPU extensions", lambda r: r.get("isa") or "n/a"),
        ("timing (warm-up + timed runs)", lambda r: f"{r['timing']['warmup']} + {r['timing']['runs']}"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    notes = {f"energy: {r['energy_note']}" for r in results}
    notes |= {f"peak memory: {r['peak_memory_note']}" for r in results}
    table.caption = "\n".join(sorted(notes))
    table.caption_justify = "left"
    return table
