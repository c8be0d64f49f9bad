"""dlkit's `char_lstm` train step against PyTorch's nn.LSTM step, same sizes, in one process.

Network: embedding (65 -> 64) -> 2-layer LSTM (256 units) -> dense (256 -> 65); batch 32 of 128
characters, fp32, Adam, cross-entropy over every position. dlkit runs the shared jitted
`train_step`; "dlkit_fused" is the default (both layers in one wavefront scan with a hand-written
backward pass, the four gates and the input projection in one matmul per layer and step:
dlkit.ops.lstm_stack), "dlkit_scan" the model with fused=False (input projection hoisted,
JAX differentiating through lax.scan layer by layer), "flax_nn_rnn" flax's own
nn.RNN(OptimizedLSTMCell) stack (the issue's 0.6x baseline). The steps are timed round-robin
(one step of each per round) so load from other processes hits all alike; each figure is the
median over rounds. Prints wall and process-CPU ms/step and torch_ms / other_ms (>= 1.0: at least
as fast as PyTorch). On a loaded machine PyTorch's OpenMP threads degrade badly (spin-waiting
for a core); `--threads 1` compares single-threaded steps, where CPU time is load-independent.
"dlkit_fused_k10" runs 10 steps per dispatch (`config.steps_per_call`) through the training
loop's Runner on one device, "dlkit_dp2_k10" the same over 2 CPU devices (`--cpu_devices`,
config.parallel.cpu_devices), as the char configs train; figures per step. With glibc's default
malloc settings XLA's ~120 MB per-call scratch buffer is mmap'ed and page-faulted afresh on every
call (~35k minor faults, tens of ms); K steps per call pay that once. Allocator settings act on
both frameworks in the process; to see them:
MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=100000000000 (env).

    JAX_PLATFORMS=cpu python benchmarks/lstm_cpu.py [--rounds 30] [--threads 1]
        [--steps_per_call 10] [--cpu_devices 2]
"""

import argparse
import os

import numpy as np
from timing import time_round_robin  # benchmarks/timing.py (run as scripts)

V, E, H, LAYERS, B, T = 65, 64, 256, 2, 32, 128


def _optimizer():
    import ml_collections

    from dlkit.train import make_optimizer

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
    return make_optimizer(opt, 10**6)


def jax_step(model, x: np.ndarray, y: np.ndarray):
    """A closure running one step of the shared jitted train_step for `model` on a fixed batch."""
    import jax
    import jax.numpy as jnp

    from dlkit.train import create_train_state, make_steps, objectives

    state = create_train_state(model, _optimizer(), jnp.asarray(x[:1]), seed=0)
    train, _ = make_steps(objectives.get("cross_entropy"))
    batch = {"inputs": jnp.asarray(x), "targets": jnp.asarray(y)}
    box = [state]

    def run():
        box[0], sums = train(box[0], batch)
        jax.block_until_ready(sums["loss"])

    return run


def runner_step(model, x: np.ndarray, y: np.ndarray, steps_per_call: int, kind: str):
    """A closure running one dispatch of K steps through dlkit's Runner, as the training loop
    does: kind "sharded" splits the batch over every device of the process (the CPU devices of
    --cpu_devices), "none" runs on device 0."""
    import jax

    from dlkit.train import create_train_state, objectives
    from dlkit.train.config import default_config
    from dlkit.train.options import RunOptions
    from dlkit.train.runner import Runner

    config = default_config()
    config.batch_size, config.parallel.kind = x.shape[0], kind
    runner = Runner.create(RunOptions.from_config(config), objectives.get("cross_entropy"))
    state = runner.place(create_train_state(model, _optimizer(), x[:1], seed=0))
    batches = [{"inputs": x, "targets": y}] * steps_per_call
    box = [state]

    def run():
        box[0], sums = runner.train(box[0], batches)
        jax.block_until_ready(sums["loss"])

    return run


def flax_rnn_model():
    """The same network with flax's nn.RNN(OptimizedLSTMCell) layers (the issue's baseline)."""
    import flax.linen as nn

    class FlaxCharLSTM(nn.Module):
        num_classes: int = V

        @nn.compact
        def __call__(self, tokens, *, train=False):
            x = nn.Embed(self.num_classes, E)(tokens)
            for _ in range(LAYERS):
                x = nn.RNN(nn.OptimizedLSTMCell(H))(x)
            return nn.Dense(self.num_classes)(x)

    return FlaxCharLSTM()


def torch_step(x: np.ndarray, y: np.ndarray):
    """A closure running one eager PyTorch step: nn.Embedding -> nn.LSTM -> nn.Linear, Adam."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, E)
            self.lstm = nn.LSTM(E, H, num_layers=LAYERS, batch_first=True)
            self.head = nn.Linear(H, V)

        def forward(self, tokens):
            return self.head(self.lstm(self.embed(tokens))[0])

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xb, yb = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))

    def run():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(xb).reshape(-1, V), yb.reshape(-1))
        loss.backward()
        opt.step()
        float(loss.detach())

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no_flax", action="store_true", help="skip the nn.RNN baseline")
    parser.add_argument(
        "--steps_per_call",
        type=int,
        default=10,
        help="K steps per dispatch (config.steps_per_call) for the k/dp rows; 1: skip them",
    )
    parser.add_argument(
        "--cpu_devices",
        type=int,
        default=2,
        help="N CPU devices for the data-parallel row (config.parallel.cpu_devices); 1: skip it",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="1: PyTorch and XLA single-threaded (robust on a loaded machine); 0: their defaults",
    )
    args = parser.parse_args()
    if args.threads == 1:  # must precede the first jax import
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    import jax
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_devices > 1:  # before JAX starts; the single-device rows use device 0
        from dlkit import cpu

        cpu.request_devices(args.cpu_devices)  # with the XLA threads its collectives need

    from dlkit import models

    rng = np.random.default_rng(0)
    text = rng.integers(0, V, (B, T + 1)).astype(np.int32)
    x, y = text[:, :-1], text[:, 1:]
    kw = dict(num_classes=V, hidden_size=H, num_layers=LAYERS, embed_dim=E)
    steps = {
        "torch_nn_lstm": torch_step(x, y),
        "dlkit_fused": jax_step(models.get("char_lstm", **kw), x, y),
        "dlkit_scan": jax_step(models.get("char_lstm", fused=False, **kw), x, y),
    }
    per_call = {name: 1 for name in steps}
    k = args.steps_per_call
    if k > 1:
        name = f"dlkit_fused_k{k}"
        steps[name] = runner_step(models.get("char_lstm", **kw), x, y, k, "none")
        per_call[name] = k
    n = len(jax.devices())
    config_row = f"dlkit_dp{n}_k{k}"  # as experiments/train.py runs the char configs
    if n > 1 and k > 1:
        steps[config_row] = runner_step(models.get("char_lstm", **kw), x, y, k, "sharded")
        per_call[config_row] = k
    if not args.no_flax:
        steps["flax_nn_rnn"], per_call["flax_nn_rnn"] = jax_step(flax_rnn_model(), x, y), 1
    timed = time_round_robin(steps, args.rounds)
    wall = {k: 1e3 * v[0] / per_call[k] for k, v in timed.items()}
    cpu = {k: 1e3 * v[1] / per_call[k] for k, v in timed.items()}
    print(
        f"char_lstm train step: {LAYERS} layers x {H} units, batch {B} x {T} chars, fp32, CPU, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), XLA threads "
        f"{'1' if args.threads == 1 else 'default'}, median of {args.rounds} round-robin rounds"
    )
    for name in steps:
        print(
            f"  {name:16s} wall {wall[name]:8.1f} ms/step "
            f"(torch/this {wall['torch_nn_lstm'] / wall[name]:.2f})   "
            f"cpu {cpu[name]:8.1f} ms/step (torch/this {cpu['torch_nn_lstm'] / cpu[name]:.2f})"
        )
    print(
        "ratio torch_nn_lstm / dlkit_fused (one device, one step per call) = "
        f"{wall['torch_nn_lstm'] / wall['dlkit_fused']:.2f} (wall)"
    )
    if config_row in wall:
        print(
            f"ratio torch_nn_lstm / {config_row} ({n} CPU devices, {k} steps per call, as the "
            f"char configs train) = {wall['torch_nn_lstm'] / wall[config_row]:.2f} (wall)"
        )


if __name__ == "__main__":
    main()
