"""parallel.kind "pmap" on 2 simulated CPU devices: it trains the digits MLP like "sharded",
resumes bitwise (and under "sharded"), and syncs BatchNorm statistics over the devices.

jax fixes its device count when it starts, so the 2-device cases run this file as a script in one
subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=2) that writes what the tests check.
"""

import json
import pathlib
import sys

import numpy as np
import pytest
from fresh_process import run_python
from tolerances import rtol_for

from dlkit.errors import ConfigError
from dlkit.extras.configs import get_config
from dlkit.train import restore_latest, train_and_evaluate

HERE = pathlib.Path(__file__).resolve()
CONFIGS = HERE.parents[2] / "experiments" / "configs"
STEPS = 40  # digits MLP steps (mlp_digits trains 1500)
HALF = 20  # where the interrupted runs stop


def mlp_config(kind: str):
    c = get_config(str(CONFIGS / "mlp_digits.py"))
    c.update(num_train_steps=STEPS, log_every_steps=10, eval_every_steps=STEPS, progress_bar=False)
    c.checkpoint.every_steps = 10
    c.parallel.update(kind=kind, cpu_devices=2, steps_per_call=5)  # 5 steps per pmap call
    return c


def bn_config(kind: str):
    c = get_config(str(CONFIGS / "resnet_smoke.py"))
    c.model.stage_sizes = (1,)  # the stem and one block: BatchNorm, small to compile
    c.update(num_train_steps=4, log_every_steps=4, eval_every_steps=4)
    c.parallel.update(kind=kind, cpu_devices=2)
    return c


def leaves(workdir) -> dict:
    """The final checkpoint's state as {path: array}."""
    import jax

    state = restore_latest(workdir, items=("state",))["state"]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(state)}


def two_device_cases(out):
    """Every 2-device run; writes final states (npz) and eval losses (json) to `out`."""
    import jax

    from dlkit.train import pmap_runner

    assert jax.device_count() == 2, jax.devices()
    out = pathlib.Path(out)
    losses = {}
    odd = mlp_config("pmap")
    odd.batch_size = 15
    try:  # 15 rows do not split over the 2 devices parallel.cpu_devices asks for
        train_and_evaluate(odd, out / "odd")
    except ConfigError as e:
        (out / "odd_batch.txt").write_text(str(e))
    for name, kind, stops in (
        ("sharded", "sharded", ()),
        ("pmap", "pmap", ()),
        ("resumed", "pmap", (HALF,)),  # pmap stopped at HALF, rerun
        ("cross", "pmap", (HALF, "sharded")),  # pmap stopped at HALF, finished as sharded
    ):
        workdir = out / name
        if stops:
            train_and_evaluate(mlp_config(kind), workdir, stop_after_step=stops[0])
            kind = stops[1] if len(stops) > 1 else kind
        losses[name] = train_and_evaluate(mlp_config(kind), workdir)["eval_loss"]
    for kind in ("sharded", "pmap"):
        losses[f"bn_{kind}"] = train_and_evaluate(bn_config(kind), out / f"bn_{kind}")["eval_loss"]
    # Control: without the BatchNorm sync each device normalises by its own 8 rows.
    pmap_runner.synced_apply_fn = lambda apply_fn, axis_name=None: apply_fn
    losses["bn_unsynced"] = train_and_evaluate(bn_config("pmap"), out / "bn_unsynced")["eval_loss"]
    (out / "losses.json").write_text(json.dumps({k: float(v) for k, v in losses.items()}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pmap")
    run_python([str(HERE), str(out)], devices=2, timeout=900)
    return out, json.loads((out / "losses.json").read_text())


def test_pmap_trains_the_digits_mlp_like_sharded(runs):
    out, losses = runs
    assert abs(losses["pmap"] - losses["sharded"]) <= 1e-4 * abs(losses["sharded"])
    want, got = leaves(out / "sharded"), leaves(out / "pmap")
    assert got.keys() == want.keys()
    for k, v in want.items():  # 40 Adam steps of 2-device sums in another order
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=rtol_for(np.float32, 64), err_msg=k)


def test_pmap_resumes_bitwise_and_restores_under_sharded(runs):
    out, losses = runs
    want = leaves(out / "pmap")
    got = leaves(out / "resumed")
    assert losses["resumed"] == losses["pmap"]
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    cross = leaves(out / "cross")  # the same steps, the second half jit over the mesh
    assert int(cross["['step']"]) == STEPS
    assert abs(losses["cross"] - losses["pmap"]) <= 1e-4 * abs(losses["pmap"])


def test_pmap_syncs_batchnorm_statistics_like_sharded(runs):
    out, losses = runs
    want, got = leaves(out / "bn_sharded"), leaves(out / "bn_pmap")
    stats = [k for k in want if "batch_stats" in k]
    assert stats
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    assert abs(losses["bn_pmap"] - losses["bn_sharded"]) <= 1e-4 * abs(losses["bn_sharded"])
    unsynced = leaves(out / "bn_unsynced")  # the control: per-device statistics differ
    assert max(float(np.max(np.abs(unsynced[k] - want[k]))) for k in stats) > 1e-3


def test_pmap_refuses_a_batch_that_does_not_split(runs):
    out, _ = runs
    message = (out / "odd_batch.txt").read_text()
    assert message.startswith("batch_size 15 must divide evenly over 2 devices (pmap)")


def test_pmap_refuses_several_processes(monkeypatch):
    import jax

    from dlkit.train.options import RunOptions
    from dlkit.train.pmap_runner import check_pmap

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ConfigError, match="parallel.kind 'pmap' runs on one process"):
        check_pmap(RunOptions.from_config(mlp_config("pmap")), 1)


def test_pmap_refuses_ensembles(tmp_path):
    c = mlp_config("pmap")
    c.parallel.ensemble_size = 2
    with pytest.raises(ConfigError, match="ensemble_size > 1 is not offered with parallel.kind"):
        train_and_evaluate(c, tmp_path)


if __name__ == "__main__":
    two_device_cases(sys.argv[1])
