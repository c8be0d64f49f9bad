"""dlkit's exceptions for things a user can fix or must know, each with its process exit code.

Binaries print them as one line to stderr (no traceback unless --verbose or DLKIT_VERBOSE=1) and
exit with `exit_code`: 2 for usage errors, 1 for runtime failures, 75 (EX_TEMPFAIL: rerun the same
command) for a run stopped by a signal after saving its checkpoint.
"""

import difflib

__all__ = ["DlkitError", "ConfigError", "RunError", "Diverged", "Preempted", "choose"]

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_PREEMPTED = 75


class DlkitError(Exception):
    """Base class: a one-line message that says what was wrong and what to do."""

    exit_code = EXIT_FAILURE


class ConfigError(DlkitError, ValueError):
    """A bad name, shape, path or setting that the user can fix; the message says how."""

    exit_code = EXIT_USAGE


class RunError(DlkitError, RuntimeError):
    """A run could not go on (disk full, workdir locked or unwritable, no readable checkpoint)."""

    exit_code = EXIT_FAILURE


class Diverged(RunError):
    """Non-finite loss or gradients with the `stop` policy; names the step and last good save."""


class Preempted(DlkitError):
    """A signal stopped the run after its checkpoint was saved; rerunning continues it."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, message: str, *, step: int | None = None, signal: int | None = None):
        super().__init__(message)
        self.step = step
        self.signal = signal


def choose(table, name, what: str):
    """table[name], or ConfigError 'unknown {what} {name!r}; choose one of: ...' (did you mean)."""
    try:
        return table[name]
    except (KeyError, TypeError):
        pass
    names = [str(k) for k in table]
    hint = difflib.get_close_matches(str(name), names, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(
        f"unknown {what} {name!r}{did_you_mean}; choose one of: {', '.join(names)}"
    ) from None
