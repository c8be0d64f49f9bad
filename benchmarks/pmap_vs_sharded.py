"""parallel.kind "pmap" vs "sharded" (jit over the `data` mesh) on N CPU devices: the same model,
batch and SGD steps through the library's runners (dlkit.train.runner / pmap_runner).

Prints, per kind, the median wall time per train step (round robin, so load hits both alike) and
the largest difference of the parameters and BatchNorm statistics after the timed steps from a
one-device run (both kinds compute BatchNorm statistics over the global batch).

    python benchmarks/pmap_vs_sharded.py [--devices 2] [--batch 32] [--rounds 20] [--model bn_cnn]
        [--steps_per_call 1]
"""

import argparse
import os


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--model", choices=("bn_cnn", "mlp"), default="bn_cnn")
    p.add_argument("--steps_per_call", type=int, default=1)
    return p.parse_args()


def main():
    args = parse()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from dlkit import platform

    platform.configure(keep_malloc_arena=False)  # XLA threads for the devices' collectives
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from dlkit import models
    from dlkit.extras.profile import time_round_robin
    from dlkit.train import create_train_state, objectives
    from dlkit.train.config import default_config
    from dlkit.train.options import RunOptions
    from dlkit.train.runner import Runner

    assert jax.device_count() == args.devices, jax.devices()
    if args.model == "bn_cnn":
        model = models.get("resnet18", num_classes=10, stage_sizes=(1,), width=8, cifar_stem=True)
    else:
        model = models.get("mlp", num_classes=10, hidden_sizes=(128, 64))
    rng = np.random.default_rng(0)
    k = args.steps_per_call
    batches = [
        {
            "inputs": rng.random((args.batch, 16, 16, 3), np.float32),
            "targets": rng.integers(0, 10, args.batch).astype(np.int32),
        }
        for _ in range(k)
    ]
    objective = objectives.get("cross_entropy")

    def runner(kind):
        c = default_config()
        c.batch_size = args.batch
        c.parallel.update(kind=kind, cpu_devices=1 if kind == "none" else args.devices)
        c.parallel.steps_per_call = k
        return Runner.create(RunOptions.from_config(c), objective)

    runners = {kind: runner(kind) for kind in ("sharded", "pmap", "none")}
    fresh = create_train_state(model, optax.sgd(0.05), jnp.asarray(batches[0]["inputs"][:1]), 0)
    box = {kind: r.place(fresh) for kind, r in runners.items()}

    def run(kind):
        def go():
            box[kind], sums = runners[kind].train(box[kind], batches)
            jax.block_until_ready(sums["loss"])

        return go

    times = time_round_robin({kind: run(kind) for kind in runners}, args.rounds)
    trees = {kind: jax.tree.leaves(jax.device_get(s.checkpoint_tree())) for kind, s in box.items()}

    def diff(a, b):
        return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))

    steps = (args.rounds + 3) * k
    for kind in ("sharded", "pmap"):
        print(
            f"{kind:8s} {1e3 * times[kind][0] / k:8.2f} ms/step  "
            f"max |state - one device| = {diff(trees[kind], trees['none']):.2e} after {steps} steps"
        )
    print(f"max |sharded - pmap| = {diff(trees['sharded'], trees['pmap']):.2e}")
    print(f"{'one':8s} {1e3 * times['none'][0] / k:8.2f} ms/step (one device)")
    print(f"pmap / sharded time: {times['pmap'][0] / times['sharded'][0]:.2f}")
    print(f"jax {jax.__version__}; {args.devices} CPU devices; {args.model}, batch {args.batch}")


if __name__ == "__main__":
    main()
