"""Attention speed: the Pallas flash kernel vs jax.nn.dot_product_attention (xla, cudnn) and the
reference; forward and forward + backward time, TFLOP/s and compiled peak memory; table + JSON.

FLOPs: 4 * B * H * Sq * Sk * D for the forward pass (halved when causal); forward + backward is
counted as 3.5x that (backward = 2.5x forward). Memory: the compiled program's temp + argument +
output bytes (XLA memory analysis). Ratios are against cuDNN measured in the same run.

  python benchmarks/attention.py [--json out.json] [--markdown out.md] [--time-budget 300]
  python benchmarks/attention.py --check          # kernel correctness on this device, no pytest
  JAX_PLATFORMS=cpu python benchmarks/attention.py --smoke [--check]   # tiny, interpret mode
"""

import argparse
import json
import math
import sys
import time

GIB = 2**30
GOAL = dict(batch=2, heads=16, head_dim=128, seqs=(4096, 16384))  # the H200 goal
IMPLS = ("pallas", "cudnn", "xla", "reference")
# Opt-in peer: jax's own Mosaic GPU (Hopper wgmma/TMA) attention example, to measure that route.
EXTRA_IMPLS = ("jax_mgpu",)


def flops(b, h, sq, sk, d, causal, backward):
    """4 B H Sq Sk D (halved when causal), x3.5 with the backward pass."""
    f = 4.0 * b * h * sq * sk * d * (0.5 if causal else 1.0)
    return f * (3.5 if backward else 1.0)


def attention_fn(impl, causal):
    """(q, k, v) -> out for one backend name."""
    import jax

    if impl == "pallas":
        from dlkit.kernels import flash_attention

        return lambda q, k, v: flash_attention(q, k, v, causal=causal)
    if impl == "jax_mgpu":
        from jax.experimental.pallas.ops.gpu import attention_mgpu as mgpu

        cfg = mgpu.TuningConfig(
            block_q=64, block_kv=128, max_concurrent_steps=2, causal=causal,
            block_q_dkv=64, block_kv_dkv=64, block_q_dq=64, block_kv_dq=64,
        )  # fmt: skip
        return lambda q, k, v: mgpu.attention(q, k, v, cfg)
    if impl == "reference":
        from dlkit.ops.attention import attention_reference

        return lambda q, k, v: attention_reference(q, k, v, causal=causal)
    return lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, is_causal=causal, implementation=impl
    )


def program(impl, causal, backward):
    """jit of forward, or of forward + backward (vjp with a fixed cotangent)."""
    import jax

    fn = attention_fn(impl, causal)
    if backward:
        return jax.jit(lambda q, k, v, ct: jax.vjp(fn, q, k, v)[1](ct))
    return jax.jit(lambda q, k, v, ct: fn(q, k, v))


def time_compiled(compiled, args, min_time, max_iters):
    """Median seconds of one call: round_robin timer, as many calls as fill min_time (at least 3,
    at most max_iters) after one warm-up call that sizes the count."""
    import jax

    from dlkit.extras.profile import time_round_robin

    run = {"call": lambda: jax.block_until_ready(compiled(*args))}
    start = time.perf_counter()
    run["call"]()
    one = time.perf_counter() - start
    calls = min(max_iters, max(3, math.ceil(min_time / max(one, 1e-9))))
    return time_round_robin(run, calls, warmup=0)["call"][0]


def bench_point(impl, b, h, s, d, causal, backward, args):
    """One row: {impl, pass, S, D, causal, ms, tflops, mem_gib} or {..., skipped: why}."""
    import jax
    import jax.numpy as jnp

    row = dict(impl=impl, pass_="fwd+bwd" if backward else "fwd", S=s, D=d, causal=causal)
    if impl in ("cudnn", "jax_mgpu") and jax.default_backend() != "gpu":
        return dict(row, skipped=f"{impl} needs a GPU")
    score_gib = b * h * s * s * 4 / GIB
    if impl in ("xla", "reference") and score_gib > args.max_score_gib:
        return dict(row, skipped=f"S x S scores {score_gib:.0f} GiB > --max-score-gib")
    key = jax.random.key(s * 1000 + d)
    q, k, v, ct = (
        jax.random.normal(kk, (b, s, h, d), jnp.float32).astype(args.dtype)
        for kk in jax.random.split(key, 4)
    )
    try:
        compiled = program(impl, causal, backward).lower(q, k, v, ct).compile()
        mem = compiled.memory_analysis()
        mem_gib = None
        if mem is not None:
            mem_gib = (
                mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            ) / GIB
        sec = time_compiled(compiled, (q, k, v, ct), args.min_time, args.max_iters)
    except Exception as e:  # OOM or a backend that rejects these shapes: recorded, not fatal
        return dict(row, skipped=f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
    tf = flops(b, h, s, s, d, causal, backward) / sec / 1e12
    return dict(row, ms=sec * 1e3, tflops=tf, mem_gib=mem_gib)


def configs(args):
    """(S, D, causal) points, the issue's goal points first (they matter most under a budget)."""
    pts = [(s, d, c) for s in args.seqs for d in args.head_dims for c in (False, True)]
    goal = [p for p in pts if p[1] == GOAL["head_dim"] and p[0] in GOAL["seqs"]]
    return goal + [p for p in pts if p not in goal]


def run_table(args):
    """Runs every point (within --time-budget), writing JSON after each; returns the rows."""
    import jax

    meta = dict(
        jax=jax.__version__,
        device=str(jax.devices()[0].device_kind),
        backend=jax.default_backend(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        batch=args.batch,
        heads=args.heads,
        dtype=args.dtype,
    )
    rows, start = [], time.time()
    for s, d, causal in configs(args):
        for backward in (False, True):
            for impl in args.impls:
                if time.time() - start > args.time_budget:
                    row = dict(impl=impl, pass_="fwd+bwd" if backward else "fwd", S=s, D=d)
                    rows.append(dict(row, causal=causal, skipped="time budget"))
                    continue
                row = bench_point(impl, args.batch, args.heads, s, d, causal, backward, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    return meta, rows


def markdown(meta, rows):
    """The table: per point and pass, ms / TFLOP/s / GiB per backend, and pallas vs cudnn."""
    head = f"{meta['date']}, jax {meta['jax']}, {meta['device']} ({meta['backend']}), "
    head += f"B={meta['batch']} H={meta['heads']} {meta['dtype']}. ms / TFLOP/s / GiB.\n\n"
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    cols = ["S", "D", "causal", "pass"] + impls + ["cudnn ms / pallas ms"]
    lines = [head + "| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    keys = list(dict.fromkeys((r["S"], r["D"], r["causal"], r["pass_"]) for r in rows))
    for key in keys:
        got = {r["impl"]: r for r in rows if (r["S"], r["D"], r["causal"], r["pass_"]) == key}
        cells = [str(x) for x in key]
        for impl in impls:
            r = got.get(impl, {})
            cells.append(
                f"{r['ms']:.3f} / {r['tflops']:.0f} / {r['mem_gib'] or 0:.2f}"
                if "ms" in r
                else r.get("skipped", "-")[:40]
            )
        p, c = got.get("pallas", {}), got.get("cudnn", {})
        cells.append(f"{c['ms'] / p['ms']:.2f}" if "ms" in p and "ms" in c else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def goal_summary(rows):
    """The issue's H200 goal per S: fwd >= 1.0x cuDNN and >= 550 TFLOP/s; fwd+bwd >= 0.8x."""
    out = []
    for s in GOAL["seqs"]:
        for causal in (False, True):
            for pass_, need in (("fwd", 1.0), ("fwd+bwd", 0.8)):
                sel = {
                    r["impl"]: r
                    for r in rows
                    if (r["S"], r["D"], r["causal"], r["pass_"])
                    == (s, GOAL["head_dim"], causal, pass_)
                }
                p, c = sel.get("pallas", {}), sel.get("cudnn", {})
                if "ms" not in p or "ms" not in c:
                    out.append(f"goal S={s} causal={causal} {pass_}: unmeasured")
                    continue
                ratio = c["ms"] / p["ms"]
                ok = ratio >= need and (pass_ != "fwd" or p["tflops"] >= 550)
                out.append(
                    f"goal S={s} causal={causal} {pass_}: cudnn/pallas time {ratio:.2f} "
                    f"(need >= {need}), pallas {p['tflops']:.0f} TFLOP/s: "
                    f"{'MET' if ok else 'NOT MET'}"
                )
    return "\n".join(out)


# Launch candidates (block_q, block_k, warps, stages) for D=128 on GPU; the first is the default.
FWD_CANDIDATES = [
    (128, 64, 8, 3),
    (128, 128, 8, 3),
    (128, 64, 4, 3),
    (128, 64, 8, 4),
    (64, 64, 4, 3),
]
BWD_CANDIDATES = [(64, 64, 8, 2), (64, 64, 4, 2), (128, 64, 8, 2), (64, 128, 8, 2), (32, 64, 4, 3)]


def sweep(args):
    """Times the pallas kernel per launch candidate (forward, then forward + backward with the
    default forward) by swapping dlkit's `launch_params`; returns rows with a `launch` field."""
    import importlib

    import jax

    fa = importlib.import_module("dlkit.kernels.flash_attention")
    default, rows, start = fa.launch_params, [], time.time()
    try:
        for s in args.seqs:
            for causal in (False, True):
                for backward, cands in ((False, FWD_CANDIDATES), (True, BWD_CANDIDATES)):
                    for cand in cands:
                        if time.time() - start > args.time_budget:
                            return rows
                        d0 = default(128, False)
                        pair = (d0[0], cand) if backward else (cand, d0[1])
                        fa.launch_params = lambda dp, interpret, pair=pair: pair
                        jax.clear_caches()  # the plan is fixed when _attention is traced
                        d = args.head_dims[0]
                        r = bench_point(
                            "pallas", args.batch, args.heads, s, d, causal, backward, args
                        )
                        rows.append(dict(r, launch=list(cand)))
                        print(json.dumps(rows[-1]), flush=True)
    finally:
        fa.launch_params = default
        jax.clear_caches()
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes (CPU, interpret mode)")
    p.add_argument("--check", action="store_true", help="correctness of the kernel, then exit")
    p.add_argument("--seqs", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch", type=int, default=GOAL["batch"])
    p.add_argument("--heads", type=int, default=GOAL["heads"])
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS + EXTRA_IMPLS)
    p.add_argument("--max-score-gib", type=float, default=16.0)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of timed calls per point")
    p.add_argument("--max-iters", type=int, default=50)
    p.add_argument("--time-budget", type=float, default=1e9, help="seconds; later points skip")
    p.add_argument("--json")
    p.add_argument("--markdown")
    p.add_argument("--sweep", action="store_true", help="pallas launch candidates (GPU tuning)")
    args = p.parse_args(argv)
    from dlkit import platform

    platform.choose_threefry()  # the door: DLKIT_THREEFRY=unrolled, faster CPU compiles
    if args.sweep:
        if args.smoke:
            args.seqs, args.head_dims, args.batch, args.heads = [40], [32], 1, 2
            args.min_time, args.max_iters = 0.0, 1
        rows = sweep(args)
        best = {}
        for r in rows:
            k = (r["S"], r["causal"], r["pass_"])
            if "ms" in r and (k not in best or r["ms"] < best[k]["ms"]):
                best[k] = r
        for k, r in sorted(best.items()):
            print(f"best S={k[0]} causal={k[1]} {k[2]}: launch {r['launch']} {r['ms']:.3f} ms")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return 0
    if args.check:
        from dlkit.extras.flash_check import run_checks

        return 0 if run_checks(smoke=args.smoke, json_path=args.json) else 1
    if args.smoke:
        args.seqs, args.head_dims, args.batch, args.heads = [40], [32], 1, 2
        args.min_time, args.max_iters = 0.0, 1
    meta, rows = run_table(args)
    table = markdown(meta, rows) + "\n" + goal_summary(rows) + "\n"
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
