"""The `edgeprune` command: thin Typer commands over the library.

Each command group lives in its own module and registers itself on `app` when imported.
"""

from __future__ import annotations

import sys

from edgeprune.cli.app import app, console_err
from edgeprune.errors import EdgepruneError

# Importing a command module registers its commands on `app`, in this order in --help: the
# workflow order, not the alphabet.
# isort: off
from edgeprune.cli import commands_data as _commands_data  # noqa: F401,E402
from edgeprune.cli import commands_train as _commands_train  # noqa: F401,E402
from edgeprune.cli import commands_evaluate as _commands_evaluate  # noqa: F401,E402
from edgeprune.cli import commands_measure as _commands_measure  # noqa: F401,E402
from edgeprune.cli import commands_prune as _commands_prune  # noqa: F401,E402
from edgeprune.cli import commands_export as _commands_export  # noqa: F401,E402
from edgeprune.cli import commands_demo as _commands_demo  # noqa: F401,E402
from edgeprune.cli import commands_study as _commands_study  # noqa: F401,E402
from edgeprune.cli import commands_station as _commands_station  # noqa: F401,E402
from edgeprune.cli import commands_station_dashboard as _commands_station_dashboard  # noqa: F401,E402
from edgeprune.cli import commands_fleet as _commands_fleet  # noqa: F401,E402
# isort: on


def _one_line_summaries(typer_app) -> None:
    """Typer lists a command by its raw docstring, hard line breaks included, so `--help` showed
    sentences cut mid-line: list each command by its first paragraph as one line instead."""
    import inspect

    for info in typer_app.registered_commands:
        if info.short_help is None and info.callback is not None and info.callback.__doc__:
            first = inspect.cleandoc(info.callback.__doc__).split("\n\n")[0]
            info.short_help = " ".join(first.split())
    for group in typer_app.registered_groups:
        _one_line_summaries(group.typer_instance)


_one_line_summaries(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input ends with `error: ...` on stderr and exit code 2, not a traceback.

    Typer (standalone mode) already turns usage errors into exit code 2 and always ends with
    SystemExit; only the library's own EdgepruneError needs catching here.
    """
    try:
        app(args=argv, prog_name="edgeprune")
    except EdgepruneError as exc:
        from rich.markup import escape

        # Escaped: a message naming `edgeprune[openvino]` must not lose it as a markup tag.
        console_err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
