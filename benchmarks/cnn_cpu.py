"""dlkit's `cnn` train step against PyTorch's eager CPU step for the same network, in one process.

Network (the notes'): conv3x3(32, SAME)-ReLU-maxpool2-conv3x3(64, SAME)-ReLU-maxpool2-dense256-ReLU-
dense10; batch 128 of 28x28x1, fp32, Adam, cross-entropy. The steps are timed round-robin (one
step of each per round) so that load from other processes hits all of them alike; each figure is
the median over rounds. Prints per-step milliseconds and the ratio torch_ms / dlkit_ms (>= 1.0
means dlkit is at least as fast). PyTorch is a benchmark-only dependency.

    JAX_PLATFORMS=cpu python benchmarks/cnn_cpu.py [--rounds 40] [--batch 128] [--threads 1]
"""

import argparse
import os

import numpy as np
from timing import time_round_robin  # benchmarks/timing.py (run as scripts)


def dlkit_step(impl: str, x: np.ndarray, y: np.ndarray):
    """A closure running one jitted dlkit train step (the shared train_step) on a fixed batch."""
    import jax
    import jax.numpy as jnp
    import ml_collections

    from dlkit import models
    from dlkit.train import create_train_state, make_optimizer, make_steps, objectives

    model = models.get("cnn", num_classes=10, impl=impl)
    opt = ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 1e-3,
            "schedule": "constant",
            "warmup_steps": 0,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "grad_clip_norm": 0.0,
        }
    )
    state = create_train_state(model, make_optimizer(opt, 10**6), jnp.asarray(x[:1]), seed=0)
    train, _ = make_steps(objectives.get("cross_entropy"))
    batch = {"inputs": jnp.asarray(x), "targets": jnp.asarray(y, jnp.int32)}
    box = [state]

    def run():
        box[0], sums = train(box[0], batch)
        jax.block_until_ready(sums["loss"])

    return run


def torch_step(x: np.ndarray, y: np.ndarray):
    """A closure running one eager PyTorch step of the same network (NCHW, Adam)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yb = torch.from_numpy(y.astype(np.int64))

    def run():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(xb), yb)
        loss.backward()
        opt.step()
        float(loss.detach())

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="pin to this many CPUs and use that many threads in both (0: all CPUs, defaults); "
        "--threads 1 compares single-threaded steps, which other load slows alike",
    )
    args = parser.parse_args()
    if args.threads:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
        if args.threads == 1:  # before jax is imported
            os.environ["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
            )
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 28, 28, 1), np.float32)
    y = rng.integers(0, 10, args.batch)
    steps = {
        "torch_eager": torch_step(x, y),
        "dlkit_fast": dlkit_step("fast", x, y),
        "dlkit_reference": dlkit_step("reference", x, y),
    }
    load_before = os.getloadavg()[0]
    ms = {k: 1e3 * v[0] for k, v in time_round_robin(steps, args.rounds).items()}
    load = max(load_before, os.getloadavg()[0])
    print(
        f"cnn train step, batch {args.batch}, 28x28x1, fp32, CPU, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), median of {args.rounds} round-robin rounds, "
        f"{len(os.sched_getaffinity(0))} CPUs, 1-min load average {load:.1f}"
    )
    for name, v in ms.items():
        print(f"  {name:16s} {v:8.2f} ms/step")
    print(f"ratio torch_eager / dlkit_fast      = {ms['torch_eager'] / ms['dlkit_fast']:.2f}")
    print(f"ratio torch_eager / dlkit_reference = {ms['torch_eager'] / ms['dlkit_reference']:.2f}")
    if load > 1.5:
        print(
            f"warning: the CPUs were busy (load {load:.1f}): timings are unreliable; with all "
            "threads, eager PyTorch (OpenMP) slows down far more than XLA under contention, which "
            "flatters dlkit; rerun when idle, or compare single-threaded with --threads 1"
        )


if __name__ == "__main__":
    main()
