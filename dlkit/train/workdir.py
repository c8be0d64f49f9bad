"""One workdir, one run: an exclusive OS lock (fcntl.flock) held while a run trains.

The lock dies with its process (a SIGKILLed run leaves no stale lock). Each process of a
multi-host job locks its own file (run.lock, run.lock.process_1, ...), so a job's processes
may share one workdir on a shared file system while a second job on it is refused.
"""

import contextlib
import fcntl
import os
import pathlib
import socket

import jax

from dlkit.errors import RunError


def lock_path(workdir) -> pathlib.Path:
    """This process's lock file in `workdir`."""
    index = jax.process_index()
    return pathlib.Path(workdir) / ("run.lock" if index == 0 else f"run.lock.process_{index}")


def _holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors="replace").split()
    return f"pid {text[0]} on host {text[1]}" if len(text) >= 2 else "another process"


@contextlib.contextmanager
def exclusive(workdir):
    """Holds this process's lock on `workdir` for the block; RunError if another run holds it."""
    path = lock_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(
                f"workdir {pathlib.Path(workdir)} is in use by a running training "
                f"({_holder(fd)}); wait for it to end or use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (its content names the last holder)
