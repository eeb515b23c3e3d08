"""Helpers the commands share: logging to stderr and loading data with its notes shown."""

from __future__ import annotations

from edgeprune.cli.app import console_err


def log(message: str) -> None:
    console_err.print(message, highlight=False)


def warn(message: str) -> None:
    console_err.print(f"[yellow]warning:[/] {message}", highlight=False)


def load_data_logged(spec: str, **kwargs):
    """load_data, then name the source and print its notes (leaks, skipped files) as warnings."""
    from edgeprune.data import load_data

    data = load_data(spec, log=log, **kwargs)
    log(
        f"data: {data.name} — {len(data.class_names)} classes, train {len(data.train.labels)}, "
        f"val {len(data.val.labels)}, test {len(data.test.labels)}, {data.image_size}x{data.image_size}"
    )
    for note in data.notes:
        warn(note)
    return data
