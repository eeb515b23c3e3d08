"""`edgeprune prune`: prune a checkpoint (unstructured or structured), fine-tune, save a checkpoint
that `edgeprune evaluate` / `edgeprune measure` load as is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeprune.cli.app import AugmentOpt, BalanceOpt, DeviceOpt, JsonOpt, OverwriteOpt, ThreadsOpt, app, console
from edgeprune.cli.common import DataRequest, data_options, load_data_for_checkpoint, log, warn, warn_if_chance


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _acc(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


@app.command()
@data_options(exclude=("normalization",))
def prune(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder to prune (model.safetensors + model.json).")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="l1 | random (unstructured: weights zeroed) | l2-channel | l1-channel | "
            "taylor-channel | random-channel (structured: channels physically removed).",
        ),
    ] = "l1",
    target: Annotated[
        float | None,
        typer.Option("--target", help="Fraction to remove, in (0, 1): weights for l1/random, "
                     "--target-kind for channel methods (default 0.5)."),
    ] = None,
    target_kind: Annotated[
        str | None,
        typer.Option("--target-kind", help="Channel methods: params (default), channels, macs or "
                     "latency removed, relative to the dense model. latency: batch-1 latency on "
                     "this device and --latency-runtime, from a per-layer table measured here "
                     "(cached under $EDGEPRUNE_CACHE/latency); channels go where they cost the "
                     "least importance per millisecond saved."),
    ] = None,
    latency_budget_ms: Annotated[
        float | None,
        typer.Option("--latency-budget-ms", help="Channel methods: prune until the predicted batch-1 "
                     "latency is at most this many ms (instead of --target; implies --target-kind "
                     "latency)."),
    ] = None,
    latency_runtime: Annotated[
        str | None,
        typer.Option("--latency-runtime", help="--target-kind latency: the backend whose latency "
                     "counts, onnxruntime (default) or openvino."),
    ] = None,
    latency_threads: Annotated[
        int | None,
        typer.Option("--latency-threads", help="--target-kind latency: threads the latency is "
                     "measured with (default 1)."),
    ] = None,
    latency_min_keep: Annotated[
        float | None,
        typer.Option("--latency-min-keep", help="--target-kind latency: the least fraction of each "
                     "group's channels the cut keeps (default 0.25; lower reaches further, at the risk "
                     "of emptying the layers where latency is cheap to win)."),
    ] = None,
    schedule: Annotated[
        str, typer.Option("--schedule", help="oneshot | geometric | linear | agp (cubic, as TF-MOT).")
    ] = "oneshot",
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Pruning steps (default 1 for oneshot, 3 otherwise).")
    ] = None,
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", min=0, help="Fine-tuning epochs after each step.")
    ] = 1,
    max_drop: Annotated[
        float | None,
        typer.Option("--max-drop", min=0.0, help="Stop when val accuracy drops more than this many "
                     "points below the baseline; keep the last good model."),
    ] = None,
    per_layer: Annotated[
        bool, typer.Option("--per-layer", help="Unstructured: the same sparsity in every layer "
                           "instead of a global ranking.")
    ] = False,
    max_layer_sparsity: Annotated[
        float | None, typer.Option("--max-layer-sparsity", help="Unstructured layer-collapse guard: no "
                                   "layer pruned beyond this fraction (default 0.98).")
    ] = None,
    scoring: Annotated[
        str | None,
        typer.Option("--scoring", help="l1 ranking: lamp (default; magnitude normalised per layer, "
                     "LAMP, which avoids emptying layers) or magnitude (plain global |w|)."),
    ] = None,
    round_to: Annotated[
        str | None, typer.Option("--round-to", help="Channel methods: kept channel counts are "
                                 "multiples of this (SIMD alignment). Default auto: 16 on CPUs with "
                                 "AVX-512, 8 on AVX2 / NEON (read from /proc/cpuinfo); the value "
                                 "used is recorded in the checkpoint.")
    ] = None,
    min_channels: Annotated[
        int | None, typer.Option("--min-channels", min=1, help="Channel methods: fewest output "
                                 "channels any layer keeps (default 8).")
    ] = None,
    scope: Annotated[
        str, typer.Option("--scope", help="head | blocks | all: which layers may be pruned.")
    ] = "all",
    taylor_batches: Annotated[
        int | None, typer.Option("--taylor-batches", min=1, help="taylor-channel: training batches "
                                 "for the gradients (default 4).")
    ] = None,
    recalib_batches: Annotated[
        int, typer.Option("--recalib-batches", min=0, help="Training batches for batch-norm "
                          "recalibration after each step (0: off).")
    ] = 20,
    augment: AugmentOpt = "none",
    balance: BalanceOpt = "none",
    distill: Annotated[
        bool, typer.Option("--distill/--no-distill", help="Fine-tune against the unpruned model's "
                           "soft outputs (knowledge distillation, T=4, weight 0.5).")
    ] = False,
    final_epochs: Annotated[
        int, typer.Option("--final-epochs", min=0, help="Fine-tuning epochs after the last step, one "
                          "cosine schedule with the best validation epoch kept (distilled with "
                          "--distill): a deep cut recovers over more epochs than one per step.")
    ] = 0,
    lr: Annotated[float | None, typer.Option("--lr", help="Fine-tuning learning rate (default: "
                                             "the optimizer's).")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", help="Fine-tuning: sgd (warm-up then cosine "
                                           "decay, as `train`) or adam (constant lr).")] = "sgd",
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Fine-tuning batch size (default: as "
                                 "`train`, by the size of the training split).")
    ] = None,
    prune_seed: Annotated[int, typer.Option("--prune-seed", min=0, help="Seed of random methods, "
                                            "fine-tuning order and augmentation.")] = 0,
    threads: ThreadsOpt = 2,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")] = Path("runs/pruned"),
    overwrite: OverwriteOpt = False,
    show_layers: Annotated[bool, typer.Option("--show-layers", help="Print the per-layer table.")] = False,
    as_json: JsonOpt = False,
    request: DataRequest = DataRequest(),
) -> None:
    """Prune a checkpoint to a target, fine-tune after each step, and save the pruned checkpoint."""
    from edgeprune.hardware import resolve_device, set_threads
    from edgeprune.models.checkpoint import meta_from_manifest, read_manifest
    from edgeprune.outputs import check_output_folder

    from edgeprune.train import TrainRecipe
    from edgeprune.workflows.prune import PruneJob, prune_checkpoint

    # Every option is parsed into the job here, before anything is loaded, by the rules the Python
    # API and studies share (PruneJob.from_options).
    job = PruneJob.from_options(
        method, target, target_kind=target_kind, latency_budget_ms=latency_budget_ms,
        latency_runtime=latency_runtime, latency_threads=latency_threads, latency_min_keep=latency_min_keep,
        scope=scope, round_to=round_to, min_channels=min_channels, num_batches=taylor_batches,
        per_layer=per_layer or None, max_layer_sparsity=max_layer_sparsity, scoring=scoring,
        schedule=schedule, steps=steps,
        finetune=TrainRecipe(epochs=finetune_epochs, optimizer=optimizer, lr=lr, batch_size=batch_size,
                             seed=prune_seed, augment=augment, balance=balance),
        max_drop=max_drop, recalib_batches=recalib_batches, seed=prune_seed, distill=distill,
        final_epochs=final_epochs,
    )
    config = job.config
    if config.structured and round_to in (None, "auto"):
        log(f"--round-to auto: channel counts kept in multiples of {config.round_to} (this CPU's "
            "kernels; recorded in the checkpoint)")
    dev = resolve_device(device)
    set_threads(threads)
    meta = meta_from_manifest(read_manifest(checkpoint))
    # The output folder before the data is loaded (prune_checkpoint checks it again, for the API).
    check_output_folder(out, inputs=(checkpoint,), overwrite=overwrite, what="--out")
    dataset, split_warning = load_data_for_checkpoint(request, meta, str(checkpoint))
    # stdout stays pure JSON with --json: no progress bars then.
    outcome = prune_checkpoint(checkpoint, job, dataset, out=out, overwrite=overwrite, device=dev,
                               progress=not as_json, log=log,
                               allow_other_split=request.allow_other_split)
    chance_warning = warn_if_chance(outcome.record.test_accuracy, len(meta.class_names), "pruned model's test")
    if as_json:
        payload = {k: v for k, v in outcome.record.to_dict().items() if k != "layers"}
        typer.echo(json.dumps({**payload, "chance_level_warning": chance_warning}, indent=2, default=str))
        return
    _print_outcome(outcome, structured=config.structured, out=out, show_layers=show_layers)
    if split_warning:
        warn(split_warning)


def _print_outcome(outcome, *, structured: bool, out: Path, show_layers: bool) -> None:
    result, record, plan = outcome.result, outcome.record, outcome.result.schedule
    final_test, baseline_test = record.test_accuracy, record.baseline_test_accuracy
    table = Table(title=f"{result.method} → {result.asked} {result.achieved_kind}, "
                  f"{plan.get('kind')} x{plan.get('steps')}")
    for col in ("step", "asked", "got", "params", "−params", "−MACs", "val pruned", "val tuned",
                "kept"):
        table.add_column(col, justify="right")
    for s in result.steps:
        table.add_row(
            str(s.step), f"{s.asked:.4f}", f"{s.achieved:.4f}", f"{s.nonzero_params:,}",
            _pct(s.params_reduction), _pct(s.macs_reduction), _acc(s.accuracy_after_prune),
            _acc(s.val_accuracy), "yes" if s.accepted else "[red]no",
        )
    console.print(table)
    if show_layers:
        lt = Table(title="per-layer")
        for col in ("layer", "shape before", "shape after", "sparsity"):
            lt.add_column(col, justify="right" if col != "layer" else "left")
        for r in result.layers:
            lt.add_row(r["layer"], "x".join(map(str, r["shape_before"] or [])),
                       "x".join(map(str, r["shape_after"])),
                       f"{r['sparsity']:.1%}" + (" (cap)" if r["capped"] else ""))
        console.print(lt)
    in_scope = [r for r in result.layers if r["in_scope"]]
    if structured:
        changed = [r for r in in_scope if r["out_before"] != r["out_after"]]
        console.print(
            f"per-layer: {len(changed)} of {len(result.layers)} layers lost output channels; "
            + ", ".join(f"{r['layer']} {r['out_before']}→{r['out_after']}" for r in changed[:4])
            + (", ..." if len(changed) > 4 else "") + " (--show-layers for all)"
        )
    else:
        lo = min(in_scope, key=lambda r: r["sparsity"])
        hi = max(in_scope, key=lambda r: r["sparsity"])
        console.print(
            f"per-layer sparsity over {len(in_scope)} layers: min {lo['sparsity']:.1%} ({lo['layer']}), "
            f"max {hi['sparsity']:.1%} ({hi['layer']}); no layer emptied (--show-layers for all)"
        )
    if result.capped_layers:
        warn(f"{len(result.capped_layers)} layer(s) held at the {result.config.get('max_layer_sparsity'):.0%} per-layer cap "
             "(layer-collapse guard); see --show-layers")
    if result.stopped_reason:
        warn(result.stopped_reason)
    lat = result.latency
    if lat:
        console.print(
            f"batch-1 latency on {lat['runtime']} {lat['runtime_version']}, {lat['threads']} "
            f"thread(s), {lat['device']} ({lat['isa']}): predicted {lat['predicted_ms']:.3f} ms, "
            f"measured {lat['measured_ms']:.3f} ms vs dense {lat['measured_dense_ms']:.3f} ms in the "
            f"same round-robin ({lat['measured_speedup']:.2f}x faster; table {lat['table_file']}, "
            f"{lat['table_measured_now']} entries measured now)"
        )
    console.print(
        f"achieved: {result.achieved:.4f} {result.achieved_kind} removed (asked {result.asked}); "
        f"params {result.nonzero_params:,} of {result.dense_params:,} nonzero "
        f"({result.params_reduction:.1%} fewer), MACs {result.macs:,} ({result.macs_reduction:.1%} fewer), "
        f"tensors {'physically smaller' if structured else 'same shape, zeros'}; "
        f"test accuracy {final_test:.4f} (dense {baseline_test:.4f}); written to {out}"
    )
