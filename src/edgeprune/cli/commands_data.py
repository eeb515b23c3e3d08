"""`edgeprune data check`: what a data set holds before anything trains on it."""

from __future__ import annotations

import json
from contextlib import contextmanager

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from edgeprune.cli.app import JsonOpt, console, console_err, data_app
from edgeprune.cli.common import DataRequest, data_options


@contextmanager
def decode_progress():
    """A rich progress bar on stderr (stdout stays clean for --json), one task per description."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console_err,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done)

        yield update


def _print_report(report: dict) -> None:
    console.print(f"[bold]{report['source']}[/]  ({report['kind']}, {report['image_size']}x{report['image_size']})")
    table = Table("class", "train", "val", "test", title="images per class and split")
    for cls in report["classes"]:
        table.add_row(cls, *(str(report["counts"][split][cls]) for split in ("train", "val", "test")))
    table.add_section()
    table.add_row("[bold]total[/]", *(f"[bold]{report['totals'][s]}[/]" for s in ("train", "val", "test")))
    console.print(table)
    files = report["files"]
    if files:
        modes = ", ".join(f"{mode} {count}" for mode, count in files["modes"].items())
        console.print(
            f"source files: {files['count']} ({files['readable']} readable); width "
            f"{files['width']['min']}-{files['width']['max']}, height {files['height']['min']}-"
            f"{files['height']['max']} px; modes: {modes}"
        )
        sixteen = files.get("sixteen_bit") or {}
        if sixteen.get("count"):
            console.print(f"16-bit images: {sixteen['count']}, converted: {sixteen['conversion']}", highlight=False)
    for bad in report["unreadable"]:
        console.print(f"[red]unreadable:[/] {bad['path']} ({bad['reason']})", highlight=False)
    duplicates = report["duplicates"]
    within = ", ".join(f"{split} {n}" for split, n in duplicates["within"].items())
    across = ", ".join(f"{pair} {info['count']}" for pair, info in duplicates["across"].items())
    console.print(f"exact duplicates ({duplicates['method']}): within {within}; across {across}")
    for pair, info in duplicates["across"].items():
        for example in info["examples"]:
            console.print(f"  {pair}: " + " = ".join(example.values()), highlight=False)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


@data_app.command("check")
@data_options(exclude=("normalization", "allow_other_split"))
def check(
    json_output: JsonOpt = False,
    request: DataRequest = DataRequest(),
) -> None:
    """Report the detected source, classes and counts per split, file sizes and modes,
    unreadable files and exact duplicates within each split and across train/test."""
    from edgeprune.cli.common import log
    from edgeprune.data import check_data

    with decode_progress() as progress:
        report = check_data(request.options(), log=log, progress=progress)
    if json_output:
        typer.echo(json.dumps(report, indent=2))  # not rich: it would wrap long lines
    else:
        _print_report(report)
