"""dlkit.extras.profile: XLA cost counts against hand counts, loop flag, timing, layers."""

import math
import time

import jax
import jax.numpy as jnp
import pytest

from dlkit.extras import profile
from dlkit.nn import MLP


def test_matmul_counts_match_hand_counts():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    c = profile.cost_analysis(jnp.matmul, a, b)
    assert c["flops"] == 2 * 8 * 16 * 4
    assert c["bytes_accessed"] == 4 * (8 * 16 + 16 * 4 + 8 * 4)
    assert c["has_loop"] is False


def test_loops_are_flagged():
    c = profile.cost_analysis(
        lambda x: jax.lax.fori_loop(0, 5, lambda i, y: y * 2.0, x), jnp.ones(3)
    )
    assert c["has_loop"] is True


def test_profile_intensity_time_and_given_counts():
    x = jnp.ones((64, 64))
    c = profile.profile(jnp.matmul, x, x, name="mm", repeats=3)
    assert c.name == "mm" and c.source == "xla" and c.seconds > 0
    assert c.intensity == pytest.approx(2 * 64**3 / (3 * 4 * 64 * 64))
    assert c.flops_per_sec == pytest.approx(c.flops / c.seconds)
    given = profile.profile(jnp.matmul, x, x, repeats=0, flops=10.0, bytes_accessed=5.0)
    assert given.source == "given" and given.intensity == 2.0 and math.isnan(given.seconds)
    assert profile.bound(given, peak_flops=100.0, peak_bytes_per_sec=10.0) == "memory"  # 2 < 10
    assert profile.bound(given, peak_flops=100.0, peak_bytes_per_sec=100.0) == "compute"  # 2 > 1
    with pytest.raises(ValueError, match="stat"):
        profile.time_fn(jnp.sin, x, stat="mean")


def test_round_robin_runs_the_closures_in_turn():
    calls = []
    runs = {n: (lambda n=n: calls.append(n) or time.sleep(0.01 if n == "b" else 0)) for n in "ab"}
    times = profile.time_round_robin(runs, rounds=3, warmup=1, stat="min")
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up, then one call of each per round
    assert set(times) == {"a", "b"} and times["b"][0] >= 0.01  # (wall, process CPU) seconds
    with pytest.raises(ValueError, match="rounds"):
        profile.time_round_robin(runs, rounds=0)


def test_machine_names_cpu_versions_and_load():
    info = profile.machine()
    assert info["jax"] == jax.__version__ and info["cpus_usable"] >= 1 and len(info["loadavg"]) == 3
    name = profile.results_name("cpu_suite", {"model": "AMD EPYC 9R14 (x)"}, "20261206-101000")
    assert name == "cpu_suite-amd-epyc-9r14-x-20261206-101000.json"


def test_mlp_layers_one_cost_each_with_matmul_plus_bias_flops():
    b, d, h, c = 4, 5, 8, 3
    model = MLP(num_classes=c, hidden_sizes=(h,), dropout_rate=0.1)  # dropout is identity at eval
    x = jnp.ones((b, d))
    costs = profile.profile_layers(model, model.init(jax.random.PRNGKey(0), x), x, repeats=2)
    assert [k.name for k in costs] == ["hidden_0 (Dense)", "head (Dense)"]
    assert costs[0].flops == 2 * b * d * h + b * h
    assert costs[1].flops == 2 * b * h * c + b * c
    assert costs[0].bytes_accessed >= 4 * (b * d + d * h + h + b * h)
    assert all(k.seconds > 0 for k in costs)


def test_cnn_layers_conv_and_pooling():
    cnn = pytest.importorskip("dlkit.nn.cnn")
    # XLA's convs: XLA's cost analysis counts a oneDNN custom call (impl "auto" on CPU) as 0 FLOPs
    model = cnn.CNN(num_classes=10, features=(4,), hidden=(), padding="VALID", impl="fast")
    x = jnp.ones((2, 8, 8, 2))  # 2 input channels: the generic conv (1 takes a shifted sum)
    costs = profile.profile_layers(model, model.init(jax.random.PRNGKey(0), x), x, repeats=1)
    kinds = [k.name.split(" ")[1] for k in costs]
    assert kinds == ["(Conv2D)", "(MaxPool)", "(Dense)"]
    conv, pool = costs[0], costs[1]
    # VALID 3x3 on 8x8: 6x6 outputs, each 9 multiply-adds per (C_in=2, C_out=4), plus the bias
    # and the ReLU (the CNN's activation runs inside its Conv2D: relu=True), one op per output.
    assert conv.flops == 2 * 2 * 6 * 6 * 9 * 2 * 4 + 2 * (2 * 6 * 6 * 4)
    assert pool.flops == 2 * 3 * 3 * 4 * 3  # B Ho Wo C outputs, 3 comparisons per 2x2 window
    assert pool.intensity < conv.intensity
