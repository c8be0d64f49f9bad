"""Peak memory of attention forward + backward vs sequence length: chunked vs reference.

Two honest measures per point, causal self-attention, B=1, H=1, D=32, float32:
- XLA: the compiled program's memory analysis (temp + argument + output bytes) of
  jit(grad(sum(attention(q, k, v)))); compiling needs no memory for the data, so every S is covered.
- RSS: a fresh subprocess per point runs that program once and reports its peak resident set
  (ru_maxrss) minus the resident set just before the run (after jax import, inputs and compile).
  Reference runs stop at --rss_max_reference (its S x S matrices outgrow a shared machine).

  JAX_PLATFORMS=cpu python benchmarks/attention_memory.py [--max_len 16384] [--no_rss] [--smoke]
--speed instead times forward + backward of each backend relative to the reference (best of 3),
which is what `choose_implementation` ("auto") on CPU is based on.
"""

import argparse
import json
import resource
import subprocess
import sys

MIB = 2**20


def program(impl: str, s: int):
    """jit(grad) of sum(attention) for (1, s, 1, 32) inputs, and the input spec."""
    import jax
    import jax.numpy as jnp

    from dlkit.ops.attention import attention_reference
    from dlkit.ops.chunked_attention import chunked_attention

    fn = attention_reference if impl == "reference" else chunked_attention
    grad = jax.grad(lambda q, k, v: fn(q, k, v, causal=True).sum(), (0, 1, 2))
    return jax.jit(grad), jax.ShapeDtypeStruct((1, s, 1, 32), jnp.float32)


def xla_bytes(impl: str, s: int) -> int:
    """temp + argument + output bytes of the compiled forward + backward."""
    fn, spec = program(impl, s)
    m = fn.lower(spec, spec, spec).compile().memory_analysis()
    return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes


def rss_point(impl: str, s: int) -> None:
    """Subprocess body: prints {"peak_mib", "delta_mib"} for one run."""
    import jax
    import jax.numpy as jnp

    fn, spec = program(impl, s)
    q, k, v = (jax.random.normal(jax.random.key(i), spec.shape, jnp.float32) for i in range(3))
    compiled = fn.lower(q, k, v).compile()
    jax.block_until_ready((q, k, v))
    before = _current_rss()
    jax.block_until_ready(compiled(q, k, v))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"peak_mib": peak, "delta_mib": max(peak - before, 0.0)}))


def _current_rss() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / MIB


def measure_rss(impl: str, s: int):
    cmd = [sys.executable, __file__, "--point", impl, str(s)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def speed(shapes=((8, 128, 4), (4, 512, 4), (2, 1024, 4), (1, 4096, 2))):
    """Prints a table of fwd+bwd time per backend as a multiple of the reference's."""
    import jax

    from dlkit.extras.profile import time_round_robin
    from dlkit.kernels import cpu
    from dlkit.ops.attention_dispatch import choose_implementation, dot_product_attention

    impls = ("reference", "xla", "chunked") + (("cpu",) if cpu.available() else ())
    print("| B, S, H (D=32, causal) | auto picks | " + " | ".join(impls) + " |")
    print("|---|---|" + "---:|" * len(impls))
    for b, s, h in shapes:
        q = jax.random.normal(jax.random.key(0), (b, s, h, 32))  # q = k = v
        runs = {}
        for impl in impls:
            attn = lambda q, k, v, impl=impl: dot_product_attention(  # noqa: E731
                q, k, v, causal=True, implementation=impl
            ).sum()
            f = jax.jit(jax.grad(attn, (0, 1, 2)))
            runs[impl] = lambda f=f, x=q: jax.block_until_ready(f(x, x, x))
        times = {i: wall for i, (wall, _) in time_round_robin(runs, 3, 1, "min").items()}
        cells = " | ".join(f"{times[i] / times['reference']:.2f}" for i in impls)
        print(f"| {b}, {s}, {h} | {choose_implementation(q, q)} | {cells} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_len", type=int, default=16384)
    parser.add_argument("--min_len", type=int, default=512)
    parser.add_argument("--rss_max_reference", type=int, default=8192)
    parser.add_argument("--no_rss", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="S 64 and 128, seconds (CI)")
    parser.add_argument("--point", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.min_len, args.max_len, args.rss_max_reference = 64, 128, 64
    if args.point:
        return rss_point(args.point[0], int(args.point[1]))
    if args.speed:
        return speed(((2, 64, 2),)) if args.smoke else speed()
    import jax

    print(
        f"jax {jax.__version__}, device {jax.devices()[0].device_kind}, B=1 H=1 D=32 f32, "
        "causal, forward + backward"
    )
    print(
        "| S | reference XLA MiB | chunked XLA MiB | ref / chunked | reference RSS MiB "
        "| chunked RSS MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    s = args.min_len
    while s <= args.max_len:
        ref, chk = xla_bytes("reference", s) / MIB, xla_bytes("chunked", s) / MIB
        rss_ref = rss_chk = "-"
        if not args.no_rss:
            rss_chk = f"{measure_rss('chunked', s)['delta_mib']:.0f}"
            if s <= args.rss_max_reference:
                rss_ref = f"{measure_rss('reference', s)['delta_mib']:.0f}"
        print(
            f"| {s} | {ref:.1f} | {chk:.1f} | {ref / chk:.1f} | {rss_ref} | {rss_chk} |", flush=True
        )
        s *= 2


if __name__ == "__main__":
    main()
