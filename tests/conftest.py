"""Test set-up: CPU only, a private TFDS data_dir, and a fixture for the shared data folder."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


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
