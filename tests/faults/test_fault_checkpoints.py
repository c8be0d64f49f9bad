"""Damaged checkpoints are set aside (never deleted) and the newest readable one restored, ending
bitwise equal to an uninterrupted run; none readable: one RunError, nothing moved."""

import shutil

import pytest
from fault_utils import assert_same_run, tiny_config

from dlkit.errors import RunError
from dlkit.train import train_and_evaluate


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(uninterrupted 60-step run, a run stopped at 40 with checkpoints 20 and 40)."""
    full, part = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("part")
    train_and_evaluate(tiny_config(), full)
    train_and_evaluate(tiny_config(), part, stop_after_step=40)
    return full, part


def biggest(step_dir):
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def damage(path, how: str) -> None:
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "delete":
        path.unlink()
    elif how == "garble":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncate", "delete", "garble"])
def test_damaged_newest_is_set_aside_and_the_run_ends_exact(tmp_path, runs, capfd, how):
    full, part = runs
    work = tmp_path / "w"
    shutil.copytree(part, work)
    damage(biggest(work / "checkpoints" / "40"), how)
    train_and_evaluate(tiny_config(), work)
    err = capfd.readouterr().err
    assert "warning: checkpoint step 40 is damaged" in err and "moved to" in err
    assert "TensorStore details" not in err and "<bound method" not in err  # one plain line
    assert (work / "checkpoints" / "damaged" / "40").is_dir()
    assert_same_run(full, work)


def test_half_written_temporary_is_set_aside(tmp_path, runs):
    full, part = runs
    work = tmp_path / "w"
    shutil.copytree(part, work)
    tmp = work / "checkpoints" / "60.orbax-checkpoint-tmp-1234"
    shutil.copytree(work / "checkpoints" / "40", tmp)
    damage(biggest(tmp), "truncate")
    train_and_evaluate(tiny_config(), work)
    assert (work / "checkpoints" / "damaged" / tmp.name).is_dir()
    assert_same_run(full, work)


def test_none_readable_is_one_error_and_nothing_moves(tmp_path, runs):
    work = tmp_path / "w"
    shutil.copytree(runs[1], work)
    for step in ("20", "40"):
        damage(biggest(work / "checkpoints" / step), "delete")
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    with pytest.raises(RunError, match=r"no readable checkpoint in .*step 40: .*step 20: "):
        train_and_evaluate(tiny_config(), work)
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before
