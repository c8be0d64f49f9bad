"""Multi-step fusion: dlkit's MLP train step, K steps per dispatch (lax.scan, config
`steps_per_call`), against PyTorch's eager loop for the same MLP and batch, in one process.

Model (the notes' MLP on digits): 64 -> 128 -> ReLU -> 64 -> ReLU -> 10, fp32, Adam, cross-entropy,
batch 64 (the mlp_digits config). Each round times one call of each contender: K eager PyTorch
steps, K jitted dlkit steps (one dispatch each) and one fused dlkit call of K steps, so load from
other processes hits all alike; figures are medians over rounds, per step. Prints the ratios
torch / dlkit (> 1 means dlkit is faster).

    JAX_PLATFORMS=cpu python benchmarks/mlp_cpu.py [--rounds 30] [--k 50] [--batch 64] \
        [--hidden 128,64] [--torch_threads 0]
"""

import argparse
import functools

import numpy as np
from timing import time_round_robin  # benchmarks/timing.py (run as scripts)


def dlkit_runs(x: np.ndarray, y: np.ndarray, k: int, hidden: tuple):
    """(one jitted step per call, K fused steps per call) closures on a fixed batch."""
    import jax
    import jax.numpy as jnp
    import ml_collections

    from dlkit import models
    from dlkit.train import create_train_state, make_optimizer, objectives
    from dlkit.train.step import multi_step, train_step

    model = models.get("mlp", num_classes=10, hidden_sizes=hidden)
    opt = ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-3})
    step = functools.partial(train_step, objective=objectives.get("cross_entropy"))
    single = jax.jit(step, donate_argnums=0)
    fused = jax.jit(functools.partial(multi_step, step_fn=step), donate_argnums=0)
    batch = {"inputs": jnp.asarray(x), "targets": jnp.asarray(y, jnp.int32)}
    stacked = jax.tree.map(lambda a: jnp.stack([a] * k), batch)
    boxes = [
        [create_train_state(model, make_optimizer(opt, 10**6), batch["inputs"][:1], seed=0)]
        for _ in range(2)
    ]

    def run_single():
        for _ in range(k):
            boxes[0][0], sums = single(boxes[0][0], batch)
        jax.block_until_ready(sums["loss"])

    def run_fused():
        boxes[1][0], sums = fused(boxes[1][0], stacked)
        jax.block_until_ready(sums["loss"])

    return run_single, run_fused


def torch_run(x: np.ndarray, y: np.ndarray, k: int, hidden: tuple):
    """A closure running K eager PyTorch steps of the same MLP (Adam)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers, width = [], x.shape[1]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    net = nn.Sequential(*layers, nn.Linear(width, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xb, yb = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def run():
        for _ in range(k):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step()
        loss.item()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--k", type=int, default=50, help="steps per call (steps_per_call)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=str, default="128,64")
    parser.add_argument("--torch_threads", type=int, default=0, help="0: PyTorch's default")
    args = parser.parse_args()
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    hidden = tuple(int(h) for h in args.hidden.split(","))
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 64), np.float32)
    y = rng.integers(0, 10, args.batch)
    single, fused = dlkit_runs(x, y, args.k, hidden)
    runs = {
        "torch_eager": torch_run(x, y, args.k, hidden),
        "dlkit_jit": single,
        "dlkit_fused": fused,
    }
    us = {n: 1e6 * v[0] / args.k for n, v in time_round_robin(runs, args.rounds, 2).items()}
    print(
        f"mlp 64-{'-'.join(map(str, hidden))}-10 train step, batch {args.batch}, fp32, Adam, CPU, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), K={args.k} steps per "
        f"call, median of {args.rounds} round-robin rounds"
    )
    for name, v in us.items():
        print(f"  {name:12s} {v:8.1f} us/step")
    print(f"ratio torch_eager / dlkit_jit   = {us['torch_eager'] / us['dlkit_jit']:.2f}")
    print(f"ratio torch_eager / dlkit_fused = {us['torch_eager'] / us['dlkit_fused']:.2f}")


if __name__ == "__main__":
    main()
