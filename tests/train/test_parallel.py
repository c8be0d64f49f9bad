"""8 simulated CPU devices: sharded, FSDP and one-device training agree (MLP and a BatchNorm CNN,
whose statistics are over the global batch); checkpoints move between 8 devices and 1.

jax fixes its device count when it starts, so the 8-device parts run this file as a script in a
subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8.
"""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from dlkit.train import restore_latest, train_and_evaluate
from dlkit.train.config import default_config

HERE = pathlib.Path(__file__).resolve()
KINDS = ("sharded", "fsdp")
STEPS = 3


def run_on_8(case: str, tmp_path) -> str:
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
        "NPROC": "16",  # 2 XLA threads per CPU device, or the all-reduce may hang (dlkit.platform)
    }
    out = subprocess.run(
        [sys.executable, str(HERE), case, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def step_config(kind: str):
    c = default_config()
    c.batch_size = 16
    c.parallel.kind = kind
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-2
    return c


def models_under_test():
    from dlkit import models

    return {
        "mlp": models.get("mlp", num_classes=10, hidden_sizes=(16,)),
        # A CNN with BatchNorm from the registry: conv-BN stem and one residual block.
        "bn_cnn": models.get(
            "resnet18", num_classes=10, stage_sizes=(1,), width=4, cifar_stem=True
        ),
    }


def train_steps(kind: str, model, batches):
    """STEPS train steps through a Runner; returns (canonical state tree, last sums, eval sums)."""
    import jax.numpy as jnp

    from dlkit.train import create_train_state, make_optimizer, objectives
    from dlkit.train.options import RunOptions
    from dlkit.train.runner import Runner

    c = step_config(kind)
    runner = Runner.create(RunOptions.from_config(c), objectives.get("cross_entropy"))
    tx = make_optimizer(c.optimizer, 100)
    state = create_train_state(model, tx, jnp.asarray(batches[0]["inputs"][:1]), 0)
    state = runner.place(state)
    for batch in batches:
        state, sums = runner.train(state, [batch])
    eval_sums = runner.eval(state, {**batches[0], "mask": np.ones(16, np.float32)})
    tree = state.checkpoint_tree()
    return tree, jax.device_get(sums), jax.device_get(eval_sums)


def flat(tree) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(tree)}


def equality_case(tmp_path):
    """Writes final trees of every (model, kind), and of one device's rows alone, to npz."""
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    batches = [
        {
            "inputs": rng.random((16, 8, 8, 1), np.float32),
            "targets": rng.integers(0, 10, 16).astype(np.int32),
        }
        for _ in range(STEPS)
    ]
    out = {}
    for name, model in models_under_test().items():
        for kind in ("none", *KINDS) if name == "mlp" else ("none", "sharded"):
            tree, sums, eval_sums = train_steps(kind, model, batches)
            if kind == "fsdp":  # the largest kernels really are split across the 8 devices
                specs = {str(x.sharding.spec) for x in jax.tree.leaves(tree["params"])}
                out[f"{name}/fsdp_split"] = np.array(any("data" in s for s in specs))
            for k, v in flat(tree).items():
                out[f"{name}/{kind}/{k}"] = v
            out[f"{name}/{kind}/loss"] = np.asarray(sums["loss"])
            out[f"{name}/{kind}/eval_loss"] = np.asarray(eval_sums["loss"])
    # Control: BatchNorm statistics of one device's rows (2 of 16) differ from the global batch's,
    # so "sharded equals one device" checks that the statistics really are global.
    local = [{k: np.repeat(v[:2], 8, axis=0) for k, v in b.items()} for b in batches]
    tree, _, _ = train_steps("none", models_under_test()["bn_cnn"], local)
    for k, v in flat(tree).items():
        out[f"bn_cnn/one_device_rows/{k}"] = v
    np.savez(pathlib.Path(tmp_path) / "trees.npz", **out)


def test_sharded_fsdp_and_one_device_agree(tmp_path):
    run_on_8("equality", tmp_path)
    trees = dict(np.load(tmp_path / "trees.npz"))
    assert trees["mlp/fsdp_split"]  # (the BN CNN's kernels are under FSDP_MIN_SIZE: not run)
    for name, kinds in (("mlp", KINDS), ("bn_cnn", ("sharded",))):
        ref = {k.split("/", 2)[2]: v for k, v in trees.items() if k.startswith(f"{name}/none/")}
        assert any("batch_stats" in k for k in ref) == (name == "bn_cnn")
        for kind in kinds:
            for key, want in ref.items():
                got = trees[f"{name}/{kind}/{key}"]
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{kind} {key}")
    local = max(
        float(np.max(np.abs(trees[f"bn_cnn/one_device_rows/{k}"] - trees[f"bn_cnn/none/{k}"])))
        for k in (k.split("/", 2)[2] for k in trees if k.startswith("bn_cnn/none/"))
        if "batch_stats" in k
    )
    assert local > 1e-3, "one device's BatchNorm statistics should not match the global batch"


def run_config(kind: str, **over):
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (32,)
    c.data.name = "digits"
    c.batch_size = 32
    c.eval_batch_size = 100
    c.num_train_steps = 8
    c.log_every_steps = 4
    c.eval_every_steps = 8
    c.checkpoint_every_steps = 4
    c.progress_bar = False
    c.parallel.kind = kind
    for k, v in over.items():
        c[k] = v
    return c


def portability_case(tmp_path):
    """On 8 devices (FSDP): finish the run saved on 1 device; start one and stop at step 4."""
    tmp_path = pathlib.Path(tmp_path)
    assert jax.device_count() == 8
    train_and_evaluate(run_config("fsdp"), tmp_path / "from_1")
    train_and_evaluate(run_config("fsdp"), tmp_path / "from_8", stop_after_step=4)


def test_checkpoints_restore_on_8_devices_and_on_1(tmp_path):
    train_and_evaluate(run_config("none"), tmp_path / "from_1", stop_after_step=4)
    run_on_8("portability", tmp_path)
    train_and_evaluate(run_config("none"), tmp_path / "from_8")  # saved on 8, resumed on 1
    train_and_evaluate(run_config("none"), tmp_path / "ref")  # uninterrupted, one device
    ref = restore_latest(tmp_path / "ref", items=("state",))
    for run in ("from_1", "from_8"):
        got = restore_latest(tmp_path / run, items=("state",))
        assert got["step"] == ref["step"] == 8
        for (path, want), have in zip(
            jax.tree.leaves_with_path(ref["state"]), jax.tree.leaves(got["state"]), strict=True
        ):
            np.testing.assert_allclose(
                np.asarray(have), np.asarray(want), rtol=1e-5, atol=1e-6, err_msg=f"{run} {path}"
            )


if __name__ == "__main__":
    {"equality": equality_case, "portability": portability_case}[sys.argv[1]](sys.argv[2])
