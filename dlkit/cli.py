"""run(main): absl's app.run for dlkit binaries, with user-facing failures as one line on stderr.

A DlkitError exits with its exit_code (2 usage, 1 runtime, 75 preempted), a full disk or an
unwritable path with 1, Ctrl-C outside a training run with 130. `--verbose` or DLKIT_VERBOSE=1
re-raises instead, for the traceback.
"""

import errno
import os
import sys

from absl import app

from dlkit.errors import EXIT_FAILURE, DlkitError

EXIT_INTERRUPTED = 130
_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free space or use another --workdir",
    errno.EDQUOT: "the disk quota is exhausted; free space or use another --workdir",
    errno.EACCES: "permission denied; use a --workdir you can write to",
    errno.EROFS: "the file system is read-only; use a --workdir you can write to",
    errno.EPERM: "operation not permitted; use a --workdir you can write to",
}


def verbose() -> bool:
    """True when tracebacks were asked for (--verbose on the command line or DLKIT_VERBOSE=1)."""
    return "--verbose" in sys.argv or os.environ.get("DLKIT_VERBOSE", "") not in ("", "0")


def _fail(message: str, code: int):
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _os_error(e: OSError) -> str | None:
    """One line for an OSError a user can act on (full disk, no permission), else None."""
    for err in (e, e.__cause__, e.__context__):
        if isinstance(err, OSError) and err.errno in _OS_HINTS:
            where = f" ({err.filename})" if err.filename else ""
            return f"{_OS_HINTS[err.errno]}{where}"
    return None


def guard(fn, *args, **kwargs):
    """fn(*args, **kwargs) with DlkitError / OSError / KeyboardInterrupt turned into SystemExit."""
    if verbose():
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except DlkitError as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__, e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except OSError as e:
        message = _os_error(e)
        if message is None:
            raise
        _fail(message, EXIT_FAILURE)


def run(main):
    """app.run(main) for a binary; `--verbose` is taken off argv before absl parses flags."""
    if "--verbose" in sys.argv:
        os.environ["DLKIT_VERBOSE"] = "1"
        sys.argv = [a for a in sys.argv if a != "--verbose"]
    app.run(lambda argv: guard(main, argv))
