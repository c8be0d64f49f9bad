"""Test set-up: CPU only, one XLA compilation cache per run, a private TFDS data_dir, and a
fixture for the shared data folder."""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# OpenMP threads (oneDNN's convs) sleep when idle, as the binaries' door sets them
# (dlkit.platform): spinning teams would take the cores from the other xdist worker.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# jax.random's hash compiled unrolled on CPU, here and in the binaries tests start (their doors
# read it: dlkit.platform.choose_threefry): the same bits, the suite ~30% faster (BUILD_NOTES).
os.environ.setdefault("DLKIT_THREEFRY", "unrolled")

# One persistent XLA compilation cache for the whole run, set before jax is imported: xdist
# workers and the binaries that tests start inherit it, so a program compiled by one test (the
# same tiny config trained again, resumed, or run by a subprocess) is loaded, not compiled again.
# A fresh empty folder per run (removed at the end), so nothing carries over between runs. A size
# limit turns on jax's file lock: no process reads an entry another is still writing. Set
# JAX_COMPILATION_CACHE_DIR yourself to choose the folder (it is then kept).
try:
    import filelock  # noqa: F401  (the lock jax needs for a size-limited cache; in .[test])
except ImportError:  # without it jax warns on every cache read: no cache then
    filelock = None

_XLA_CACHE = None
if filelock is not None and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="dlkit-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))

import pytest  # noqa: E402

from dlkit import cli, platform  # noqa: E402

# The test run is a door like the binaries: dlkit's log lines (progress, warnings) print, so tests
# that call the library in-process read them as a user of a binary would (capsys / capfd).
cli.show_progress()
platform.choose_threefry()


def pytest_unconfigure(config):
    if _XLA_CACHE is not None:  # the process that made it (the xdist controller, or -n 0)
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def tfds_data_dir(tmp_path_factory):
    """One TFDS data_dir for the whole run (shared by xdist workers; preparation is locked)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / "tfds"
    os.environ["TFDS_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data (or $DLKIT_SHARED_DATA); skips the test when it is absent."""
    from dlkit.data import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data folder ../shared/data not found (set DLKIT_SHARED_DATA)")
    return path
