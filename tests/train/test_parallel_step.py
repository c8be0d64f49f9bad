"""Train-step options on one device: K fused steps, gradient accumulation, bf16 compute."""

import jax
import jax.numpy as jnp
import numpy as np
from tolerances import rtol_for

from dlkit import models
from dlkit.train import create_train_state, make_optimizer, objectives, train_and_evaluate
from dlkit.train.config import default_config
from dlkit.train.options import RunOptions
from dlkit.train.runner import Runner
from dlkit.train.schedule import steps_this_call
from dlkit.train.step import train_step


def config(**over):
    c = default_config()
    c.batch_size = 16
    c.parallel.kind = "none"
    c.optimizer.learning_rate = 1e-2
    for k, v in over.items():
        c[k] = v
    return c


def batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "inputs": rng.random((16, 8, 8, 1), np.float32),
            "targets": rng.integers(0, 10, 16).astype(np.int32),
        }
        for _ in range(n)
    ]


def fresh(runner, c, dropout=0.0):
    model = models.get("mlp", num_classes=10, hidden_sizes=(16,), dropout_rate=dropout)
    tx = make_optimizer(c.optimizer, 100)
    state = create_train_state(model, tx, jnp.zeros((1, 8, 8, 1)), 0)
    return runner.place(state)


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.checkpoint_tree())]


def test_fused_steps_equal_single_steps():
    c = config()
    runner = Runner.create(RunOptions.from_config(c), objectives.get("cross_entropy"))
    data = batches(4)
    single = fresh(runner, c, dropout=0.2)  # per-step dropout keys must match too
    total = {}
    for b in data:
        single, sums = runner.train(single, [b])
        total = jax.tree.map(jnp.add, total, sums) if total else sums
    fused, fused_sums = runner.train(fresh(runner, c, dropout=0.2), data)  # one lax.scan
    assert int(fused.step) == int(single.step) == 4
    for x, y in zip(leaves(fused), leaves(single), strict=True):
        # 4 Adam steps on gradients summed over 16 rows: a scan vs 4 dispatches
        tol = rtol_for(np.float32, 4 * 16)
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol * 1e-1)
    for k in total:
        np.testing.assert_allclose(fused_sums[k], total[k], rtol=1e-5)


def test_grad_accumulation_equals_large_batch():
    big = Runner.create(RunOptions.from_config(config()), objectives.get("cross_entropy"))
    accum = Runner.create(
        RunOptions.from_config(config(grad_accum_steps=4)), objectives.get("cross_entropy")
    )
    a, b = fresh(big, config()), fresh(accum, config())
    for batch in batches(2):
        a, sums_a = big.train(a, [batch])
        b, sums_b = accum.train(b, [batch])
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sums_a["loss"], sums_b["loss"], rtol=1e-5)
    assert float(sums_b["count"]) == 16.0


def test_mixed_precision_computes_in_bf16_and_keeps_fp32_state():
    c = config()
    runner = Runner.create(RunOptions.from_config(c), objectives.get("cross_entropy"))
    state, batch = fresh(runner, c), jax.tree.map(jnp.asarray, batches(1)[0])
    options = RunOptions.from_config(config(mixed_precision=True)).step.to_step_options()
    step = jax.jit(
        lambda s, b: train_step(s, b, objective=objectives.cross_entropy, options=options)
    )
    jaxpr = str(jax.make_jaxpr(step)(state, batch))
    assert "bf16[16,16]" in jaxpr  # the hidden activations are bf16
    new, sums = step(state, batch)
    _, ref = jax.jit(lambda s, b: train_step(s, b, objective=objectives.cross_entropy))(
        state, batch
    )
    assert {x.dtype for x in jax.tree.leaves((new.params, new.opt_state))} <= {
        jnp.dtype("float32"),
        jnp.dtype("int32"),
    }
    np.testing.assert_allclose(sums["loss"], ref["loss"], rtol=2e-2)
    assert not np.allclose(np.asarray(sums["loss"]), np.asarray(ref["loss"]), rtol=1e-7, atol=0)


def loop_config(**over):
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (16,)
    c.model.dropout_rate = 0.1
    c.data.name = "digits"
    c.batch_size = 16
    c.num_train_steps = 12
    c.log_every_steps = 5  # fused calls are cut at every log / eval / checkpoint step
    c.eval_every_steps = 12
    c.checkpoint_every_steps = 6
    c.progress_bar = False
    for k, v in over.items():
        c[k] = v
    return c


def test_loop_with_steps_per_call_matches_plain_loop(tmp_path):
    from dlkit.train import restore_latest

    plain = train_and_evaluate(loop_config(), tmp_path / "plain")
    fused = train_and_evaluate(loop_config(steps_per_call=4), tmp_path / "fused")
    assert plain["step"] == fused["step"] == 12
    for k in plain:
        np.testing.assert_allclose(fused[k], plain[k], rtol=1e-5, err_msg=k)
    a = restore_latest(tmp_path / "plain", items=("state",))["state"]
    b = restore_latest(tmp_path / "fused", items=("state",))["state"]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_steps_this_call_cuts_at_every_interval():
    assert steps_this_call(0, 12, steps_per_call=4, every=(5, 12, 6)) == 4
    assert steps_this_call(4, 12, steps_per_call=4, every=(5, 12, 6)) == 1  # log at 5
    assert steps_this_call(5, 12, steps_per_call=4, every=(5, 12, 6)) == 1  # save at 6
    assert steps_this_call(10, 12, steps_per_call=4, every=(0, 0, 0)) == 2  # the last step
    assert steps_this_call(3, 100, steps_per_call=50, every=(0, 0, 0)) == 50


def test_one_runner_trains_states_of_any_structure():
    """The jitted functions are built once; another model's state needs no cache reset."""
    runner = Runner.create(RunOptions.from_config(config()), objectives.get("cross_entropy"))
    train_one = runner.train_one
    for hidden in ((16,), (8, 8)):
        model = models.get("mlp", num_classes=10, hidden_sizes=hidden)
        tx = make_optimizer(config().optimizer, 100)
        state = runner.place(create_train_state(model, tx, jnp.zeros((1, 8, 8, 1)), 0))
        state, sums = runner.train(state, batches(1))
        assert int(state.step) == 1 and np.isfinite(float(sums["loss"]))
    assert runner.train_one is train_one
