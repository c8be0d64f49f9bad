"""LeNet-5 / cnn op choices on CPU: each op's old and new form, and the lenet5 step with each
change toggled, single-threaded process-CPU medians (round-robin, so load hits all alike).

Ops (batch 128, MNIST shapes): tanh alone; conv_0 (1->6, 5x5 SAME) + bias + tanh with jnp.tanh vs
dlkit's tanh; conv_0's weight gradient as stacked taps @ gy vs lax's (YNN) for 6 and 32 outputs;
conv_1 (6->16, 5x5 VALID) forward+backward with lax's input gradient vs col2im. Step: the lenet5
train step of cpu_suite.py with the three changes off, then on one by one.

    JAX_PLATFORMS=cpu taskset -c 0 python benchmarks/lenet_ops_cpu.py [--rounds 7] [--no_step]
"""

import argparse
import functools
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
).strip()
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import time_round_robin  # noqa: E402

from dlkit.ops import activations, conv  # noqa: E402


def _ready(fn, *args):
    return lambda: jax.block_until_ready(fn(*args))


def _lax_thin_bwd(pads, res, gy):
    return jax.vjp(functools.partial(conv._conv2d_s1_plain, pads=pads), *res)[1](gy)


def _stacked_thin_bwd(pads, res, gy):
    """The thin conv's backward before this change: weight grad always from stacked taps."""
    x, w = res
    kh, kw, ci, co = w.shape
    gx, _ = _lax_thin_bwd(pads, res, gy)
    xp = jnp.pad(x[..., 0], ((0, 0), *pads))
    ho, wo = gy.shape[1:3]
    cols = jnp.stack([xp[:, p : p + ho, q : q + wo] for p in range(kh) for q in range(kw)])
    return gx, (cols.reshape(kh * kw, -1) @ gy.reshape(-1, co)).reshape(kh, kw, ci, co)


def op_rows(rng) -> dict:
    """name -> closure of one jitted op (arguments passed, never closed over as constants)."""

    def r(*s):
        return jnp.asarray(rng.standard_normal(s).astype(np.float32))

    x0, b6, y0 = r(128, 28, 28, 1), r(6), r(128, 28, 28, 6) * 2
    p0, p1 = ((2, 2), (2, 2)), ((0, 0), (0, 0))
    x1, w1, g1 = r(128, 14, 14, 6), r(5, 5, 6, 16) * 0.1, r(128, 10, 10, 16)
    rows = {
        "tanh (128,28,28,6): jnp.tanh": _ready(jax.jit(jnp.tanh), y0),
        "tanh (128,28,28,6): dlkit": _ready(jax.jit(activations.tanh), y0),
    }
    for name, act in [("jnp.tanh", jnp.tanh), ("dlkit tanh", activations.tanh)]:
        fn = jax.jit(lambda x, w, b, act=act: act(conv._conv2d_thin(x, w, p0) + b))
        rows[f"conv_0 thin + bias + tanh: {name}"] = _ready(fn, x0, r(5, 5, 1, 6) * 0.2, b6)
    for k, co in [(5, 6), (3, 32)]:  # LeNet's conv_0, the cnn's conv_0
        w, g, pads = r(k, k, 1, co) * 0.2, r(128, 28, 28, co), ((k // 2, k // 2),) * 2
        for name, bwd in [("stacked taps", _stacked_thin_bwd), ("lax (YNN)", _lax_thin_bwd)]:
            thin = jax.custom_vjp(conv._conv2d_thin.fun, nondiff_argnums=(2,))
            thin.defvjp(conv._conv2d_thin_fwd, bwd)
            fn = jax.jit(jax.grad(lambda w, x, g, f=thin, p=pads: jnp.sum(f(x, w, p) * g)))
            rows[f"conv_0 1->{co} {k}x{k} weight grad: {name}"] = _ready(fn, w, x0, g)
    for name, f in [
        ("lax input grad", conv._conv2d_s1),
        ("col2im input grad", conv._conv2d_few_in),
    ]:
        fn = jax.jit(jax.grad(lambda x, w, g, f=f: jnp.sum(f(x, w, p1) * g), argnums=(0, 1)))
        rows[f"conv_1 6->16 fwd+bwd: {name}"] = _ready(fn, x1, w1, g1)
    return rows


def step_rows() -> dict:
    """lenet5 train steps (cpu_suite's) with the changes toggled: jnp.tanh / dlkit tanh, stacked /
    lax thin weight grad, lax / col2im few-channel input grad."""
    import cpu_profile

    variants = {
        "step: before (jnp.tanh, stacked, lax gx)": (jnp.tanh, _stacked_thin_bwd, 1),
        "step: + dlkit tanh": (activations._tanh_rational, _stacked_thin_bwd, 1),
        "step: + col2im gx": (activations._tanh_rational, _stacked_thin_bwd, 8),
        "step: + lax thin weight grad (now)": (activations._tanh_rational, _lax_thin_bwd, 8),
    }
    fast_tanh, few_max = activations._tanh_rational, conv.FEW_IN_MAX
    rows = {}
    try:
        for name, (tanh_fn, thin_bwd, few) in variants.items():
            activations._tanh_rational, conv.FEW_IN_MAX = tanh_fn, few
            conv._conv2d_thin.defvjp(conv._conv2d_thin_fwd, thin_bwd)
            compiled, state, batch, _ = cpu_profile.family_step("lenet5")
            box = [state]

            def run(compiled=compiled, box=box, batch=batch):
                box[0], sums = compiled(box[0], batch)
                jax.block_until_ready(sums["loss"])

            rows[name] = run
    finally:
        activations._tanh_rational, conv.FEW_IN_MAX = fast_tanh, few_max
        conv._conv2d_thin.defvjp(conv._conv2d_thin_fwd, conv._conv2d_thin_bwd)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no_step", action="store_true", help="op rows only")
    args = parser.parse_args()
    from cpu_suite import machine

    m = machine()
    print(
        f"{m['model']}, {' '.join(m['flags'])}, {m['cpus_usable']} CPUs usable, load "
        f"{m['loadavg'][0]:.1f}, jax {m['jax']}; single thread (taskset the process to one CPU)"
    )
    rows = op_rows(np.random.default_rng(0))
    if not args.no_step:
        rows.update(step_rows())
    times = time_round_robin(rows, args.rounds, warmup=2)
    print(f"| op (single thread, {args.rounds} rounds) | CPU ms |\n|---|---:|")
    for name, (_, cpu) in times.items():
        print(f"| {name} | {1e3 * cpu:.2f} |")


if __name__ == "__main__":
    main()
