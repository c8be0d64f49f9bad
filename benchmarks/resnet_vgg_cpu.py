"""Where resnet18 / vgg_small spend CPU time, and the op rewrites tried (issue 15, evening).

Single-thread process-CPU medians (pin with `taskset -c 0`, set
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false): robust to load from other processes.

    python benchmarks/resnet_vgg_cpu.py layers     # lax conv fwd / dgrad / wgrad vs torch
    python benchmarks/resnet_vgg_cpu.py pointwise  # 1x1 convs: lax vs strided slice + matmul
    python benchmarks/resnet_vgg_cpu.py tried      # Winograd, wgrad variants, BatchNorm
    python benchmarks/resnet_vgg_cpu.py breakdown --family resnet18   # traced time per op kind
    python benchmarks/resnet_vgg_cpu.py ab --family resnet18 --variants \\
        dlkit.ops.conv:IM2COL_MAX_PATCH=0,base         # whole steps, round-robin in one process
"""

import argparse
import collections
import importlib
import re
import time

import numpy as np

DN = ("NHWC", "HWIO", "NHWC")
STAGES = [(32, 32, 64), (32, 16, 128), (32, 8, 256), (32, 4, 512)]  # resnet18 CIFAR, batch 32


def cpu_ms(fn, *args, n=7):
    """Median process-CPU ms of fn(*args) after one warm-up call."""
    import jax

    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(n):
        c = time.process_time()
        jax.block_until_ready(fn(*args))
        ts.append(time.process_time() - c)
    return 1e3 * float(np.median(ts))


def _conv(x, w, s=1, p=1):
    from jax import lax

    return lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)), dimension_numbers=DN)


def layers():
    """Per conv shape: lax fwd, input grad, weight grad (GFLOP/s); torch fwd and fwd+bwd."""
    import jax
    import torch

    torch.set_num_threads(1)
    shapes = [(b, h, c, c, 3, 1) for b, h, c in STAGES]
    shapes += [(32, 32, 64, 128, 3, 2), (32, 32, 64, 128, 1, 2), (32, 32, 3, 64, 3, 1)]
    for b, h, ci, co, k, s in shapes:
        p = k // 2
        key = jax.random.PRNGKey
        x, w = jax.random.normal(key(0), (b, h, h, ci)), jax.random.normal(key(1), (k, k, ci, co))
        y = _conv(x, w, s, p)
        gy = jax.random.normal(key(2), y.shape)
        gf = 2 * y.size * k * k * ci / 1e9
        fwd = jax.jit(lambda x, w, s=s, p=p: _conv(x, w, s, p))
        dg = jax.jit(lambda x, w, s=s, p=p, gy=gy: jax.vjp(lambda x: _conv(x, w, s, p), x)[1](gy))
        wg = jax.jit(lambda x, w, s=s, p=p, gy=gy: jax.vjp(lambda w: _conv(x, w, s, p), w)[1](gy))
        t = [cpu_ms(f, x, w) for f in (fwd, dg, wg)]
        tc = torch.nn.Conv2d(ci, co, k, s, p, bias=False)
        tx = torch.randn(b, ci, h, h, requires_grad=True)
        tgy = torch.randn(tc(tx).shape)

        def t_fwd(tc=tc, tx=tx):
            with torch.no_grad():
                tc(tx)

        def t_all(tc=tc, tx=tx, tgy=tgy):
            tc(tx).backward(tgy)

        tt = [cpu_ms(f) for f in (t_fwd, t_all)]
        print(
            f"{b}x{h}x{h} {ci}->{co} k{k} s{s} ({gf:.2f} GFLOP): lax fwd {t[0]:.1f} ms "
            f"({gf / t[0] * 1e3:.0f} GFLOP/s), dgrad {t[1]:.1f} ({gf / t[1] * 1e3:.0f}), wgrad "
            f"{t[2]:.1f} ({gf / t[2] * 1e3:.0f}), sum {sum(t):.1f}; torch fwd {tt[0]:.1f} "
            f"({gf / tt[0] * 1e3:.0f}), fwd+both grads {tt[1]:.1f}",
            flush=True,
        )


def _full(f, x, w, gy):
    import jax

    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(gy))


def _compare(name, ref, alt, x, w, gy):
    import jax
    import jax.numpy as jnp

    r = jax.jit(lambda x, w: _full(ref, x, w, gy))
    a = jax.jit(lambda x, w: _full(alt, x, w, gy))
    err = max(
        float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(u)))
        for u, v in zip(r(x, w), a(x, w), strict=True)
    )
    print(
        f"{name}: fwd+both grads ref {cpu_ms(r, x, w):.2f} ms, alt {cpu_ms(a, x, w):.2f} ms; "
        f"max rel diff {err:.1e}",
        flush=True,
    )


def pointwise():
    """Unpadded 1x1 convs: lax's convolution vs dlkit's strided slice + matmul."""
    import jax

    from dlkit.ops.conv import conv2d_pointwise, conv2d_reference

    for b, h, ci, co, s in [
        (32, 32, 64, 128, 2),
        (32, 16, 128, 256, 2),
        (32, 8, 256, 512, 2),
        (32, 8, 256, 64, 1),
        (32, 8, 64, 256, 1),
        (32, 14, 1024, 256, 1),
    ]:
        x = jax.random.normal(jax.random.PRNGKey(0), (b, h, h, ci))
        w = jax.random.normal(jax.random.PRNGKey(1), (1, 1, ci, co)) * 0.05
        gy = jax.random.normal(jax.random.PRNGKey(2), conv2d_reference(x, w, s, 0).shape)
        _compare(
            f"1x1 {b}x{h}x{h}x{ci}->{co} s{s}",
            lambda x, w, s=s: conv2d_reference(x, w, s, 0),
            lambda x, w, s=s: conv2d_pointwise(x, w, (s, s)),
            x,
            w,
            gy,
        )


def winograd(x, w):
    """Stride-1 SAME 3x3 conv as Winograd F(2x2, 3x3): transforms + 16 batched matmuls."""
    import jax.numpy as jnp

    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
    b, h, wd, ci = x.shape
    co = w.shape[-1]
    nh, nw = -(-h // 2), -(-wd // 2)
    xp = jnp.pad(x, ((0, 0), (1, 2 * nh + 1 - h), (1, 2 * nw + 1 - wd), (0, 0)))

    def bt(r):  # B^T d along one axis
        return [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]

    v = []
    for r in bt([xp[:, k : k + 2 * nh : 2] for k in range(4)]):
        v += bt([r[:, :, k : k + 2 * nw : 2] for k in range(4)])
    v = jnp.stack(v).reshape(16, b * nh * nw, ci)
    u = jnp.einsum("ip,pqco,jq->ijco", g, w, g).reshape(16, ci, co)
    m = jnp.einsum("ktc,kco->kto", v, u).reshape(4, 4, b, nh, nw, co)
    rows = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])
    ys = [[r[0] + r[1] + r[2], r[1] - r[2] - r[3]] for r in rows]
    y = jnp.stack([jnp.stack(ys[a], axis=3) for a in range(2)], axis=2)
    return y.reshape(b, 2 * nh, 2 * nw, co)[:, :h, :wd]


def _wgrad_variants():
    import jax.numpy as jnp
    from jax import lax

    def taps(x):
        h, wd = x.shape[1:3]
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return [xp[:, p : p + h, q : q + wd] for p in range(3) for q in range(3)]

    def im2col(x, gy):
        cols = jnp.concatenate(taps(x), -1).reshape(-1, 9 * x.shape[-1])
        return (cols.T @ gy.reshape(-1, gy.shape[-1])).reshape(3, 3, x.shape[-1], -1)

    def tap_dots(x, gy):
        g = gy.reshape(-1, gy.shape[-1])
        out = [t.reshape(-1, x.shape[-1]).T @ g for t in taps(x)]
        return jnp.stack(out).reshape(3, 3, x.shape[-1], -1)

    def channels_first(x, gy):
        dn = ("CHWN", "IHWO", "NHWC")
        y = lax.conv_general_dilated(x, gy, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        return y.transpose(1, 2, 0, 3)

    return {"im2col TN dot": im2col, "9 tap TN dots": tap_dots, "CHWN conv": channels_first}


def _bn_custom(eps=1e-5):
    """BatchNorm (train mode) with one stats pass and a hand-fused backward (custom VJP)."""
    import jax
    import jax.numpy as jnp

    def fwd(x, scale, bias):
        axes = tuple(range(x.ndim - 1))
        mean, mean2 = jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)
        inv = jax.lax.rsqrt(jnp.maximum(mean2 - jnp.square(mean), 0.0) + eps)
        return (x - mean) * (inv * scale) + bias, (x, mean, inv, scale)

    def bwd(res, gy):
        x, mean, inv, scale = res
        axes, n = tuple(range(x.ndim - 1)), x.size // x.shape[-1]
        xhat = (x - mean) * inv
        gb, gs = jnp.sum(gy, axes), jnp.sum(gy * xhat, axes)
        return (scale * inv) * (gy - (gb + xhat * gs) / n), gs, gb

    f = jax.custom_vjp(lambda x, s, b: fwd(x, s, b)[0])
    f.defvjp(fwd, bwd)
    return f


def tried():
    """The rewrites tried and not kept: Winograd, weight-gradient variants, a fused BatchNorm."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey
    for b, h, c in STAGES:
        x, w = jax.random.normal(key(0), (b, h, h, c)), jax.random.normal(key(1), (3, 3, c, c))
        gy = jax.random.normal(key(2), x.shape)
        _compare(f"winograd {b}x{h}x{h}x{c}", _conv, winograd, x, w * 0.05, gy)
        f = jax.jit(winograd)
        t = cpu_ms(jax.jit(_conv), x, w), cpu_ms(f, x, w)
        print(f"  forward only: lax {t[0]:.1f} ms, winograd {t[1]:.1f}")
        ref = jax.jit(lambda x, gy, w=w: jax.vjp(lambda w: _conv(x, w), w)[1](gy)[0])
        line = [f"wgrad {b}x{h}x{h}x{c}: lax {cpu_ms(ref, x, gy):.1f} ms"]
        for name, fn in _wgrad_variants().items():
            line.append(f"{name} {cpu_ms(jax.jit(fn), x, gy):.1f}")
        print(", ".join(line), flush=True)
        bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
        v = bn.init(key(0), x)
        custom = _bn_custom()

        def flax_loss(p, x, v=v, bn=bn, gy=gy):
            y, _ = bn.apply({**v, "params": p}, x, mutable=["batch_stats"])
            return jnp.sum(nn.relu(y) * gy)

        def custom_loss(p, x, gy=gy, custom=custom):
            return jnp.sum(nn.relu(custom(x, p["scale"], p["bias"])) * gy)

        t = [cpu_ms(jax.jit(jax.grad(f, (0, 1))), v["params"], x) for f in (flax_loss, custom_loss)]
        print(f"BatchNorm+ReLU fwd+bwd {x.shape}: flax {t[0]:.2f} ms, custom VJP {t[1]:.2f}")


def _kind(op: str, desc: str) -> str:
    if "convolution" in desc:
        if "transpose(jvp" not in desc:
            return "conv forward"
        m = re.search(r"f32\[(\d+),(\d+),(\d+),(\d+)\]", desc)
        return "conv weight grad" if m and m[2] == m[3] and m[2] in "13" else "conv input grad"
    if "[dot" in desc or desc.startswith("dot"):
        return "dot"
    if op.startswith("transpose"):  # transpose_copy_fusion.N: a relayout (+ fused producers)
        return "transpose"
    return "reduce" if "reduce" in desc else "elementwise / other"


def breakdown(family: str, top: int):
    """Traced time of one family's step per op kind, and the top non-conv thunks."""
    from cpu_profile import family_step, hlo_ops, traced_ms_per_op

    compiled, state, batch, jax = family_step(family)
    box = [state]

    def run():
        box[0], sums = compiled(box[0], batch)
        jax.block_until_ready(sums["loss"])

    names = hlo_ops(compiled.as_text())
    ms = cpu_ms(run)
    per_op = traced_ms_per_op(run, names, jax)
    per_kind = collections.Counter()
    for op, t in per_op.items():
        per_kind[_kind(op, names[op])] += t
    total = sum(per_kind.values())
    print(f"{family}: {ms:.1f} ms CPU per step; traced {total:.1f} ms (shares of traced time)")
    for k, t in per_kind.most_common():
        print(f"  {k:22s} {100 * t / total:5.1f}%")
    others = [(o, t) for o, t in per_op.most_common() if not _kind(o, names[o]).startswith("conv")]
    for op, t in others[:top]:
        print(f"    {100 * t / total:4.1f}% {op:28s} {names[op][:110]}")


def ab(family: str, variants: list[str], rounds: int):
    """Whole compiled steps, one per variant (module:attr=value[+...] or base), round-robin."""
    from cpu_profile import family_step

    def parse(spec):
        mod, rest = spec.split(":")
        attr, val = rest.split("=", 1)
        return importlib.import_module(mod), attr, eval(val)  # noqa: S307 - benchmark CLI

    runs = []
    for variant in variants:
        saved = []
        for spec in variant.split("+"):
            if spec != "base":
                m, a, v = parse(spec)
                saved.append((m, a, getattr(m, a)))
                setattr(m, a, v)
        compiled, state, batch, jax = family_step(family)
        runs.append({"name": variant, "step": compiled, "state": state, "ts": []})
        for m, a, v in saved:
            setattr(m, a, v)
    for _ in range(rounds + 1):
        for r in runs:
            c = time.process_time()
            r["state"], sums = r["step"](r["state"], batch)
            jax.block_until_ready(sums["loss"])
            r["ts"].append(time.process_time() - c)
    for r in runs:
        ts = r["ts"][1:]
        print(f"{family} {r['name']}: {1e3 * np.median(ts):.1f} ms CPU (min {1e3 * min(ts):.1f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("layers", "pointwise", "tried", "breakdown", "ab"))
    parser.add_argument("--family", default="resnet18")
    parser.add_argument("--variants", default="base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    if args.what == "breakdown":
        breakdown(args.family, args.top)
    elif args.what == "ab":
        ab(args.family, args.variants.split(","), args.rounds)
    else:
        {"layers": layers, "pointwise": pointwise, "tried": tried}[args.what]()


if __name__ == "__main__":
    main()
