"""The one exception type users see: a clear message, no traceback, exit code 2 in the CLI."""


class EdgepruneError(Exception):
    """Bad input or an impossible request, with a message that says what to do about it."""
