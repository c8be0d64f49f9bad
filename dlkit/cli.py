"""run(main): absl's app.run for dlkit binaries, with user-facing failures as one line on stderr.

A DlkitError exits with its exit_code (2 usage, 1 runtime, 75 preempted), a full disk or an
unwritable path with 1, Ctrl-C outside a training run (or twice in one) with 130. Library
warnings (Orbax's "Metadata file does not exist" on a resume), Orbax's logs of a full disk,
tracebacks of a KeyboardInterrupt that a library logs on its way out, and anything library threads
log or raise once the door has said its one line (Orbax's save threads dying at exit) are dropped
at this door. `--verbose` or DLKIT_VERBOSE=1 keeps all of it and re-raises instead.
DLKIT_THREEFRY=unrolled compiles jax.random's hash unrolled (dlkit.platform.choose_threefry).
"""

import errno
import logging
import os
import pathlib
import re
import sys
import tempfile
import threading
import traceback

from absl import app, flags

from dlkit import platform
from dlkit.errors import EXIT_FAILURE, EXIT_USAGE, ConfigError, DlkitError, Preempted, RunError

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


def _fail(message: str, code: int, prefix: str = "error: "):
    _exiting.set()  # library threads dying at exit say nothing after this line
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _os_error(e: OSError) -> str | None:
    """One line for an OSError a user can act on (full disk, no permission), else None."""
    for err in (e, e.__cause__, e.__context__):
        if isinstance(err, OSError) and err.errno in _OS_HINTS:
            where = f" ({err.filename})" if err.filename else ""
            return f"{_OS_HINTS[err.errno]}{where}"
    return None


_PACKAGE = pathlib.Path(__file__).resolve().parent
_OWN = (str(_PACKAGE), str(_PACKAGE.parent / "experiments"))  # dlkit and its binaries
_exiting = threading.Event()  # the door said its one line and the process is on its way out


class _QuietLibraries(logging.Filter):
    """Drops library warnings, logged KeyboardInterrupts and, once the door is exiting, all else."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _exiting.is_set():
            return False  # library threads dying at exit say nothing
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, KeyboardInterrupt):
            return False  # the interrupt is one line at the door
        own = os.path.realpath(record.pathname).startswith(_OWN)
        return own or record.levelno >= logging.ERROR


class _QuietDiskFull(logging.Filter):
    """Drops Orbax's multi-line error logs of a full disk: the RunError says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        return not ("No space left on device" in text or "RESOURCE_EXHAUSTED" in text)


class _Console(logging.Handler):
    """dlkit's log lines for a person: INFO to stdout as they are, warnings to stderr as
    "warning: ..." (the stream looked up per line, so captured streams see them too)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            print(f"warning: {record.getMessage()}", file=sys.stderr, flush=True)
        else:
            print(record.getMessage(), flush=True)


def show_progress() -> None:
    """The door's console: the library's "dlkit" logger (progress lines, warnings) printed as
    lines; library code itself only logs. Idempotent."""
    logger = logging.getLogger("dlkit")
    if not any(isinstance(h, _Console) for h in logger.handlers):
        logger.addHandler(_Console())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _quiet_libraries() -> None:
    """Installs _QuietLibraries on the absl logger and every root handler, and thread and
    unraisable-exception hooks that stay quiet once the run was interrupted (unless --verbose)."""
    show_progress()
    if verbose():
        return
    quiet, disk_full = _QuietLibraries(), _QuietDiskFull()  # asyncio's logs reach root handlers
    for target in (logging.getLogger("absl"), *logging.getLogger().handlers):
        for f in (quiet, disk_full):
            if not any(isinstance(g, type(f)) for g in target.filters):
                target.addFilter(f)
    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

    def excepthook(args):
        if not _exiting.is_set():
            thread_hook(args)

    def unraisablehook(unraisable):  # also what TensorStore's callbacks raise on their threads
        if not (_exiting.is_set() or _closed_loop(unraisable.exc_value)):
            unraisable_hook(unraisable)

    threading.excepthook, sys.unraisablehook = excepthook, unraisablehook


def _closed_loop(e: BaseException) -> bool:
    """Orbax's event loop closed under TensorStore callbacks still arriving (a failed save)."""
    return isinstance(e, RuntimeError) and str(e) == "Event loop is closed"


def _interrupt() -> None:
    """Ctrl-C: one line, exit 130; the library threads still running end silently."""
    _fail("interrupted", EXIT_INTERRUPTED)


def guard(fn, *args, **kwargs):
    """fn(*args, **kwargs) with DlkitError / OSError / KeyboardInterrupt turned into SystemExit.

    A DlkitError keeps its exit code under --verbose too (the traceback is printed first); a
    Preempted run's line is printed as it is, without the "error: " prefix.
    """
    try:
        return fn(*args, **kwargs)
    except DlkitError as e:
        if verbose():
            traceback.print_exc()
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        _fail(line, e.exit_code, "" if isinstance(e, Preempted) else "error: ")
    except app.UsageError as e:
        if verbose():
            raise
        _fail(_one_line(str(e)), EXIT_USAGE)
    except KeyboardInterrupt:
        if verbose():
            raise
        _interrupt()
    except OSError as e:
        message = None if verbose() else _os_error(e)
        if message is None:
            raise
        _fail(message, EXIT_FAILURE)


def _config_key_error(e: Exception) -> str:
    """ml_collections' 'unknown key' error as one line with its did-you-mean."""
    text = str(e.args[0] if e.args else e)
    key = re.search(r"'([^'\\]+)", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    overrides = [a.split("=", 1)[0] for a in sys.argv if re.match(r"--(no)?config\.", a)]
    bad = [a for a in overrides if key and key.group(1) in a.split(".")]
    where = f" in {bad[0]}" if bad else ""
    did_you_mean = f" (did you mean {hint.group(1)!r}?)" if hint else ""
    name = key.group(1) if key else text.splitlines()[0]
    return f"unknown config key {name!r}{where}{did_you_mean}; see the config file for its fields"


def _config_file_error(argv) -> str | None:
    """A one-line message when --config names a file that does not exist, else None."""
    for a in argv[1:]:
        if a.startswith("--config="):
            path = a.split("=", 1)[1].split(":", 1)[0]
            if not pathlib.Path(path).expanduser().is_file():
                return f"config file {path!r} not found; give a config .py such as {_EXAMPLE}"
    return None


_EXAMPLE = "experiments/configs/mlp_digits.py"


def _one_line(text: str) -> str:
    """The first line of an error, completed by its last when the first ends in ':'."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [text]
    if len(lines) == 1 or not lines[0].endswith(":"):
        return lines[0]
    last = re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1])
    return f"{lines[0]} {last}"


def parse_flags(argv):
    """absl's flag parsing with every user mistake as one line and exit code 2."""
    if not verbose():
        message = _config_file_error(argv)
        if message:
            _fail(message, EXIT_USAGE)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        if verbose():
            raise
        _fail(_one_line(str(e)), EXIT_USAGE)
    except (KeyError, AttributeError) as e:  # ml_collections: an override names no field
        if verbose():
            raise
        _fail(_config_key_error(e), EXIT_USAGE)


def config_value(flag):
    """The value of an ml_collections config flag; a config file that fails to load is a
    ConfigError naming the file and the first line of what went wrong."""
    try:
        return flag.value
    except (OSError, ImportError, SyntaxError, TypeError) as e:
        cause = e.__cause__ or e
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        raise ConfigError(
            f"cannot load --config: {lines[-1] if lines else type(cause).__name__}"
        ) from e


def run(main, *, defaults: dict | None = None):
    """app.run(main) for a binary: `--verbose` is taken off argv, `defaults` ({"--config": path})
    fill flags absent from argv, and flag parsing errors are one line with exit code 2."""
    platform.choose_threefry()  # DLKIT_THREEFRY=unrolled: the same bits, faster compiles
    if "--verbose" in sys.argv:
        os.environ["DLKIT_VERBOSE"] = "1"
        sys.argv = [a for a in sys.argv if a != "--verbose"]
    for flag, value in (defaults or {}).items():
        if not any(a == flag or a.startswith(flag + "=") for a in sys.argv[1:]):
            sys.argv.insert(1, f"{flag}={value}")

    def guarded(argv):
        _quiet_libraries()  # after app.run set up absl's handler
        return guard(main, argv)

    app.run(guarded, flags_parser=parse_flags)


def writable_workdir(path) -> pathlib.Path:
    """The workdir, created if needed; RunError at once if this process cannot write there."""
    path = pathlib.Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check_"):
            pass
    except OSError as e:
        why = _os_error(e) or f"{e.strerror or e}; use another --workdir"
        raise RunError(f"cannot write to workdir {path}: {why}") from e
    return path
