"""The errors eaft explains itself: the command line prints their message, no traceback.

`exit_code` 2 = the input (a config, a suite, an experiment file) is wrong; 1 = the run could not go on.
"""

from __future__ import annotations


class EaftError(Exception):
    exit_code = 1


class UsageError(EaftError):
    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying what to run next (the command line prints it after "interrupted; ")."""


def debugging() -> bool:
    """`--debug` or EAFT_DEBUG=1: errors that a command would explain in one line are raised with a traceback."""
    import os

    return os.environ.get("EAFT_DEBUG", "") not in ("", "0")
