"""`edgeprune study run|results|report|retime|recommend`: a whole comparison from one TOML config."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeprune.cli.app import JsonOpt, app, console
from edgeprune.cli.common import log

study_app = typer.Typer(
    help="Studies: many pruning experiments from one TOML config (see configs/), resumable, on this "
         "machine or a Ray cluster; a results table, a report and a recommendation.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")

RunDir = Annotated[Path, typer.Argument(help="The study's folder (RUN_DIR, holding study.db).",
                                        show_default=False)]


@study_app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="Study config (TOML), e.g. configs/digits-quick.toml.",
                                           show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="RUN_DIR: database, checkpoints, ONNX files, report.",
                                      show_default=False)],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study in --out: finished "
                                         "experiments are kept, unfinished ones re-run.")] = False,
    executor: Annotated[str, typer.Option("--executor", help="local (one after the other here) or ray "
                                          "(one Ray task per experiment).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="An existing Ray cluster "
                           "(e.g. ray://head:10001 or auto); default: a local Ray instance.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the experiments and an estimated time; "
                                          "run nothing.")] = False,
) -> None:
    """Run every experiment of CONFIG (baseline per fold, then each experiment), storing each
    the moment it finishes; then print the results table. The config is validated before
    anything runs."""
    from edgeprune.study.config import load_config
    from edgeprune.study.results import format_table, results
    from edgeprune.study.runner import print_plan, run_study

    study = load_config(config)
    if ray_address is not None and executor != "ray":
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError("--ray-address needs --executor ray")
    outcome = run_study(study, out, resume=resume, executor=executor, ray_address=ray_address,
                        dry_run=dry_run, log=log, progress=sys.stderr.isatty())
    if dry_run:
        print_plan(outcome, write=lambda s: console.print(s, highlight=False))
        return
    console.print(format_table(results(out)), highlight=False)
    log(f"study in {out}: `edgeprune study report {out}` writes the report")


@study_app.command("results")
def show_results(
    run_dir: RunDir,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the table to this CSV file "
                                                "(an existing file is replaced only with --overwrite).")] = None,
    per_fold: Annotated[bool, typer.Option("--per-fold", help="One row per fold instead of the mean.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --csv file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The results table: one row per model (method, schedule, target, achieved sparsity,
    parameters, MACs, sizes, accuracy, latencies, peak memory, wall time, fold spread)."""
    from edgeprune.outputs import atomic_file, check_output_file
    from edgeprune.study.results import format_table, results

    table = results(run_dir, per_fold=per_fold)
    if csv is not None:
        check_output_file(csv, overwrite=overwrite, what="CSV file")
        with atomic_file(csv, overwrite=overwrite, what="CSV file") as tmp:
            table.to_csv(tmp, index=False)
        log(f"wrote {csv}")
    if as_json:
        typer.echo(table.to_json(orient="records"))
    else:
        console.print(format_table(table), highlight=False)


@study_app.command("report")
def report(
    run_dir: RunDir,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing report.")] = False,
) -> None:
    """Write report.html (self-contained), report.md and the plots (PNG) into RUN_DIR/report/."""
    from edgeprune.study.report import write_report

    written = write_report(run_dir, overwrite=overwrite, log=log)
    log(f"wrote {written.html} ({len(written.images)} plots) and {written.markdown}")
    console.print(written.recommendation.text, highlight=False)


@study_app.command("retime")
def retime(
    run_dir: RunDir,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="Inference threads "
                       "(default: the study's [measure] threads).")] = None,
    budget: Annotated[Optional[float], typer.Option("--budget", min=0.01, help="Seconds per model, "
                      "backend and batch size (default: the study's [measure] budget_s).")] = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="Backends, comma-separated "
                       "(default: the study's, or every installed one).")] = None,
) -> None:
    """Time every model of a finished study again, all in one round-robin, and replace the stored
    latencies: each model was timed when its experiment finished, possibly hours apart and under
    other load. Run it on an otherwise idle machine; accuracy and sizes are kept."""
    from edgeprune.study.results import format_table, results
    from edgeprune.study.retime import retime_study

    done = retime_study(run_dir, threads=threads, budget_s=budget, runtimes=runtime, log=log)
    console.print(format_table(results(run_dir)), highlight=False)
    load = done["load_average_1_5_15"]
    log(f"{done['rows']} model(s) retimed on {done['device']}, {done['threads']} thread(s)"
        + (f", load average {load[0]:.2f}" if load else "")
        + f"; `edgeprune study report {run_dir} --overwrite` redraws the plots")


@study_app.command("recommend")
def recommend(
    run_dir: RunDir,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Points of the metric allowed "
                        "below the baseline (default: the config's rule).")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="accuracy, balanced_accuracy or "
                      "recall:<class>.")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option("--max-latency-ms", help="ONNX Runtime ms "
                              "per image on the study's device.")] = None,
    max_size_mb: Annotated[Optional[float], typer.Option("--max-size-mb", help="ONNX file size budget, "
                           "MB = 10^6 bytes.")] = None,
    prefer: Annotated[Optional[str], typer.Option("--prefer", help="fastest or smallest.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Latency at batch 1 or 64.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-apply a recommendation rule to a finished study (nothing runs again): the fastest (or
    smallest) model within the accuracy drop and budgets, with runners-up, or a plain "none
    qualifies"."""
    from edgeprune.study.config import RecommendRule
    from edgeprune.study.recommend import recommend as choose
    from edgeprune.study.results import results
    from edgeprune.study.store import StudyStore

    with StudyStore(run_dir) as store:
        stored = store.value("recommend") or {}
    changes = {k: v for k, v in dict(max_drop=max_drop, metric=metric, max_latency_ms=max_latency_ms,
                                     max_size_mb=max_size_mb, prefer=prefer, batch=batch).items() if v is not None}
    rule = RecommendRule(**{**stored, **changes})
    outcome = choose(results(run_dir), rule)
    if as_json:
        typer.echo(json.dumps(outcome.to_dict(), default=str))
    else:
        console.print(outcome.text, highlight=False)
