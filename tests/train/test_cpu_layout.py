"""dlkit.train.cpu_layout: the auto rule (pure), and a run on 2 CPU devices that splits its batch,
prints the choice, and resumes bitwise equal to the uninterrupted run."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fresh_process import run_python

from dlkit import cli, models
from dlkit.train import cpu_layout, create_train_state, make_optimizer
from dlkit.train.config import default_config

HERE = pathlib.Path(__file__).resolve()
BIG = 10 * cpu_layout.MIN_FLOPS_PER_DEVICE


@pytest.mark.parametrize(
    "available, batch, stats, flops, want",
    [
        (1, 128, False, BIG, 1),  # one device: nothing to split
        (2, 128, False, BIG, 2),
        (2, 128, True, BIG, 1),  # BatchNorm statistics on a small step: one device
        (2, 128, True, 2 * cpu_layout.MIN_FLOPS_PER_DEVICE_BN, 2),  # a big one splits
        (2, 128, False, cpu_layout.MIN_FLOPS_PER_DEVICE, 1),  # half the step is too small
        (2, 128, False, 2 * cpu_layout.MIN_FLOPS_PER_DEVICE, 2),
        (2, 3, False, BIG, 1),  # 3 rows do not split over 2
        (4, 6, False, BIG, 3),  # the largest divisor of the batch that fits
        (4, 128, False, 3 * cpu_layout.MIN_FLOPS_PER_DEVICE, 2),  # 4 would be too small each
    ],
)
def test_choose_devices(available, batch, stats, flops, want):
    layout = cpu_layout.choose_devices(available, batch, stats, flops)
    assert layout.devices == want
    assert ("split over" in layout.reason) == (want > 1)
    assert ("BatchNorm" in layout.reason) == (stats and available > 1 and want == 1)


BN = cpu_layout.MIN_FLOPS_PER_DEVICE_BN


@pytest.mark.parametrize(
    "stats, flops, onednn, want",
    [
        (True, 4 * BN, 3.5 * BN, 1),  # BatchNorm: oneDNN's share does not argue for a split
        (True, 4 * BN, 1.0 * BN, 2),  # its XLA part is big enough
        (True, 4 * BN, 0.0, 2),  # XLA's convs: the whole step counts
        (False, 4 * BN, 3.9 * BN, 2),  # no batch statistics: the whole step counts
    ],
)
def test_native_flops_count_against_the_batchnorm_bar_only(stats, flops, onednn, want):
    layout = cpu_layout.choose_devices(2, 32, stats, flops, onednn)
    assert layout.devices == want
    assert ("in native calls" in layout.reason) == (onednn > 0)


def test_batch_stats_and_flops_read_from_the_state():
    from dlkit.train import objectives
    from dlkit.train.options import RunOptions
    from dlkit.train.runner import step_functions

    x = jnp.zeros((4, 8, 8, 3))
    tx = make_optimizer(default_config().optimizer, 10)
    bn = models.get("resnet18", num_classes=10, stage_sizes=(1,), width=4, cifar_stem=True)
    mlp = models.get("mlp", num_classes=10, hidden_sizes=(16,))
    assert cpu_layout.has_batch_stats(create_train_state(bn, tx, x, 0))
    state = create_train_state(mlp, tx, x, 0)
    assert not cpu_layout.has_batch_stats(state)
    c = default_config()
    c.batch_size = 4
    train, _ = step_functions(RunOptions.from_config(c), objectives.get("cross_entropy"))
    batch = {"inputs": np.zeros((4, 8, 8, 3), np.float32), "targets": np.zeros(4, np.int32)}
    abstract = jax.eval_shape(lambda: create_train_state(mlp, tx, x, 0))  # nothing placed
    flops = cpu_layout.step_flops(train, abstract, batch)
    assert flops == cpu_layout.step_flops(train, state, batch)  # shapes or arrays alike
    forward = 2 * 4 * (192 * 16 + 16 * 10)  # two dense layers' multiply-adds, batch 4
    assert 3 * forward <= flops < 100 * forward  # forward + backward + update, not zero


def test_a_conv_step_costs_alike_on_onednn_and_xla():
    """The oneDNN convs (custom calls XLA costs as 0) are counted: the layout does not flip with
    the conv impl."""
    from dlkit.kernels import cpu
    from dlkit.train import objectives
    from dlkit.train.options import RunOptions
    from dlkit.train.runner import step_functions

    if not cpu.available():
        pytest.skip(f"oneDNN conv kernels unavailable: {cpu.why_unavailable()}")
    x = jnp.zeros((1, 28, 28, 1))
    tx = make_optimizer(default_config().optimizer, 10)
    c = default_config()
    c.batch_size = 16
    train, _ = step_functions(RunOptions.from_config(c), objectives.get("cross_entropy"))
    batch = {"inputs": np.zeros((16, 28, 28, 1), np.float32), "targets": np.zeros(16, np.int32)}
    flops, costs = {}, {}
    for impl in ("auto", "fast"):
        model = models.get("lenet5", num_classes=10, impl=impl)
        state = jax.eval_shape(lambda model=model: create_train_state(model, tx, x, 0))
        flops[impl] = cpu_layout.step_flops(train, state, batch)
        costs[impl] = cpu_layout.step_costs(train, state, batch)
    assert 0.8 < flops["auto"] / flops["fast"] < 1.25, flops
    assert costs["fast"][1] == 0 and costs["auto"][1] > costs["auto"][0] > 0, costs


def config():
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (32,)
    c.data.name = "digits"
    c.update(batch_size=32, eval_batch_size=100, num_train_steps=6, log_every_steps=3)
    c.update(eval_every_steps=6, progress_bar=False)
    c.checkpoint.every_steps = 3
    return c


def split_case(tmp_path):
    """On 2 CPU devices with the threshold at 0: the auto layout splits; resume is exact."""
    from dlkit.train import restore_latest, train_and_evaluate

    assert jax.device_count() == 2
    cpu_layout.MIN_FLOPS_PER_DEVICE = 0.0  # the tiny MLP counts as big enough to split
    train_and_evaluate(config(), tmp_path / "ref")
    train_and_evaluate(config(), tmp_path / "cut", stop_after_step=3)
    train_and_evaluate(config(), tmp_path / "cut")
    ref, cut = (restore_latest(tmp_path / r, items=("state",)) for r in ("ref", "cut"))
    for a, b in zip(jax.tree.leaves(ref["state"]), jax.tree.leaves(cut["state"]), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    print("resume equal")


def test_a_run_splits_over_two_cpu_devices_and_resumes_exactly(tmp_path):
    out = run_python([str(HERE), str(tmp_path)], devices=2)
    assert out.stdout.count("dlkit CPU layout: batch 32 split over 2 CPU devices") == 3
    assert "resume equal" in out.stdout


if __name__ == "__main__":  # a door: dlkit's progress lines print, as in a binary
    cli.show_progress()
    split_case(pathlib.Path(sys.argv[1]))
