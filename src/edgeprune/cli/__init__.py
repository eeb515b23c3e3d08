"""The `edgeprune` command: thin Typer commands over the library.

Each command group lives in its own module and registers itself on `app` when imported.
"""

from __future__ import annotations

import sys

import click
import typer

from edgeprune.cli.app import app, console_err
from edgeprune.errors import EdgepruneError

# Importing a command module registers its commands on `app`.
from edgeprune.cli import commands_data as _commands_data  # noqa: F401,E402
from edgeprune.cli import commands_train as _commands_train  # noqa: F401,E402
from edgeprune.cli import commands_measure as _commands_measure  # noqa: F401,E402
from edgeprune.cli import commands_demo as _commands_demo  # noqa: F401,E402


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input ends with `error: ...` on stderr and exit code 2, not a traceback."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="edgeprune", standalone_mode=False)
    except EdgepruneError as exc:
        console_err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console_err.print("aborted")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
