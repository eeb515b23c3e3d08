"""`edgeprune station export-labels`: the parts people labelled on the dashboard, as a
class-folder tree for `edgeprune train` / `prune` (the retraining loop of issue 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeprune.cli.app import console
from edgeprune.cli.commands_station import station_app
from edgeprune.cli.common import warn


@station_app.command("export-labels")
def export_labels(
    db: Annotated[Path, typer.Option("--db", help="The station's SQLite decision log (e.g. station.db).")],
    out: Annotated[Path, typer.Option(
        "--out", help="New (or empty) folder: OUT/<class>/<id>_<file> for every labelled part.")],
) -> None:
    """Write every part labelled on the dashboard as OUT/<label>/<image>, ready for
    `edgeprune train --data OUT` or `edgeprune prune --data OUT`. Files that changed or vanished
    since they were decided are left out (their sha256 no longer matches the log)."""
    from edgeprune.station.review import export_labels as export

    result = export(db, out)
    for reason in result.skipped[:10]:
        warn(f"left out: {reason}")
    if len(result.skipped) > 10:
        warn(f"... and {len(result.skipped) - 10} more left out")
    per_class = ", ".join(f"{name} {count}" for name, count in sorted(result.written.items()))
    console.print(f"{result.total} labelled images in {len(result.written)} classes ({per_class}) -> {result.out}")
    if len(result.written) < 2:
        warn("only one class labelled so far: training needs images of at least two classes")
