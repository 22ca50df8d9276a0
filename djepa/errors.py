"""Errors that mean the user asked for something impossible: printed as one line, no traceback."""


class UsageError(ValueError):
    """A bad key, value or path in the command line or config; the message names it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, as a scheduler sends before it kills a job: handled like Ctrl-C, exit status 143."""
