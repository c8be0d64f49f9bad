"""pmap (BatchNorm synchronised by an interceptor) vs jit over a sharded `data` mesh, on N CPU
devices: the same BatchNorm CNN, batch and SGD steps; does jit + sharding cover what pmap did?

Prints, per path, the median wall time per train step (round robin, so load hits both alike) and
the largest difference of the parameters and BatchNorm statistics after the timed steps from a
one-device run (both paths compute BatchNorm statistics over the global batch).

    python benchmarks/pmap_vs_sharded.py [--devices 2] [--batch 32] [--rounds 20] [--model bn_cnn]
"""

import argparse
import dataclasses
import functools
import os
import sys


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--model", choices=("bn_cnn", "mlp"), default="bn_cnn")
    return p.parse_args()


def main():
    args = parse()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from dlkit import platform

    platform.configure(keep_malloc_arena=False)  # XLA threads for the devices' collectives
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    sys.path.insert(0, os.path.dirname(__file__))
    from timing import time_round_robin

    from dlkit import models
    from dlkit.train import create_train_state, objectives
    from dlkit.train.step import StepOptions, train_step

    assert jax.device_count() == args.devices, jax.devices()
    if args.model == "bn_cnn":
        model = models.get("resnet18", num_classes=10, stage_sizes=(1,), width=8, cifar_stem=True)
    else:
        model = models.get("mlp", num_classes=10, hidden_sizes=(128, 64))
    rng = np.random.default_rng(0)
    batch = {
        "inputs": rng.random((args.batch, 16, 16, 3), np.float32),
        "targets": rng.integers(0, 10, args.batch).astype(np.int32),
    }
    objective = objectives.get("cross_entropy")

    def fresh():
        return create_train_state(model, optax.sgd(0.05), jnp.asarray(batch["inputs"][:1]), 0)

    # jit over a mesh: state replicated, batch split along `data`; XLA adds the all-reduces.
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step = functools.partial(train_step, objective=objective)
    jit_step = jax.jit(step, donate_argnums=0, out_shardings=(rep, rep))
    g_batch = jax.device_put(batch, rows)

    # pmap: a leading device axis, psum of grads, BatchNorm axis_name set while tracing.
    def sync_bn(next_fun, args_, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.module.axis_name is None:
            object.__setattr__(context.module, "axis_name", "data")
        return next_fun(*args_, **kwargs)

    options = dataclasses.replace(StepOptions(), axis_name="data")

    def pmap_body(s, b):
        with nn.intercept_methods(sync_bn):
            return train_step(s, b, objective=objective, options=options)

    n = args.devices
    pmap_step = jax.pmap(pmap_body, axis_name="data", donate_argnums=0)
    p_batch = jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch)
    one_step = jax.jit(step, donate_argnums=0)

    box = {
        "sharded": jax.device_put(fresh(), rep),
        "pmap": jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *x.shape)), fresh()),
        "one": fresh(),
    }

    def run(name, fn, b):
        def go():
            box[name], sums = fn(box[name], b)
            jax.block_until_ready(sums["loss"])

        return go

    runs = {
        "sharded": run("sharded", jit_step, g_batch),
        "pmap": run("pmap", pmap_step, p_batch),
        "one": run("one", one_step, batch),
    }
    times = time_round_robin(runs, args.rounds)
    ref = jax.tree.leaves(box["one"].checkpoint_tree())
    for name in ("sharded", "pmap"):
        tree = box[name].checkpoint_tree()
        if name == "pmap":
            tree = jax.tree.map(lambda x: np.asarray(x)[0], tree)
        diff = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(tree), ref, strict=True)
        )
        print(
            f"{name:8s} {1e3 * times[name][0]:8.2f} ms/step  "
            f"max |state - one device| = {diff:.2e} after {args.rounds + 3} steps"
        )
    pm = jax.tree.map(lambda x: np.asarray(x)[0], box["pmap"].checkpoint_tree())
    between = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
            jax.tree.leaves(box["sharded"].checkpoint_tree()), jax.tree.leaves(pm), strict=True
        )
    )
    print(f"max |sharded - pmap| = {between:.2e}")
    print(f"{'one':8s} {1e3 * times['one'][0]:8.2f} ms/step (one device)")
    print(f"pmap / sharded time: {times['pmap'][0] / times['sharded'][0]:.2f}")
    print(f"jax {jax.__version__}; {n} CPU devices; model {args.model}; batch {args.batch}")


if __name__ == "__main__":
    main()
