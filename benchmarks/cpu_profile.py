"""Where the CPU time goes: per family, the train step's achieved FLOP/s against this machine's
measured matmul peak, and its top XLA ops (thunks) from a jax.profiler trace.

The families and shapes are cpu_suite.py's (one device, one step per call). FLOPs are XLA's
cost_analysis of the compiled step; time is the median process-CPU time of a call (single-threaded
by default, so load from other processes barely moves it); the peak is the best of jnp.matmul and
torch.matmul on n x n fp32 under the same thread count. The trace runs with
--xla_cpu_enable_xprof_traceme so each thunk (fusion, library call) is one event; each top op is
shown with the HLO ops inside it (convolution, dot, reduce-window, ...). Writes
benchmarks/results/cpu_profile-<cpu>-<date>.json.

    JAX_PLATFORMS=cpu python benchmarks/cpu_profile.py [--families cnn,resnet18] [--threads 1]
"""

import argparse
import collections
import datetime
import glob
import gzip
import json
import os
import pathlib
import re
import tempfile
import time

import numpy as np
from cpu_suite import FAMILIES, ROOT, fake_batch, load_config, machine, slug

HEAVY = ("convolution", "dot", "reduce-window", "select-and-scatter", "scatter", "gather", "while")


def cpu_time(fn, repeats: int) -> float:
    """Median process-CPU seconds of fn() (already compiled)."""
    ts = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        ts.append(time.process_time() - c)
    return float(np.median(ts))


def matmul_peak(n: int, repeats: int) -> dict:
    """FLOP/s of n x n fp32 matmuls, JAX (XLA) and torch, best over sizes n/2, n."""
    import jax
    import jax.numpy as jnp

    try:
        import torch
    except ImportError:
        torch = None
    out = {"jax": 0.0, "torch": 0.0}
    for m in (n // 2, n):
        a = jax.random.normal(jax.random.PRNGKey(0), (m, m))
        f = jax.jit(jnp.matmul)
        f(a, a).block_until_ready()
        out["jax"] = max(
            out["jax"], 2 * m**3 / cpu_time(lambda a=a, f=f: f(a, a).block_until_ready(), repeats)
        )
        if torch is None:
            continue
        t = torch.randn(m, m)
        out["torch"] = max(out["torch"], 2 * m**3 / cpu_time(lambda t=t: t @ t, repeats))
    return out


def hlo_ops(text: str) -> dict:
    """Thunk / instruction name -> 'kind: heavy ops inside' from the compiled HLO text."""
    comps, current = {}, None
    for line in text.splitlines():
        if m := re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line):
            current = m.group(1)
            comps[current] = []
        elif current and line.strip() and line.strip() != "}":
            comps[current].append(line.strip().removeprefix("ROOT "))
    out = {}
    for body in comps.values():
        for line in body:
            m = re.match(r"%?([\w.\-]+) = (\S+) (\w[\w\-]*)\(", line)
            if not m:
                continue
            name, shape, op = m.groups()
            called = re.findall(r"calls=%?([\w.\-]+)", line)
            inside = [o for c in called for o in _ops_in(comps.get(c, []))]
            heavy = sorted({o for o in inside if o in HEAVY}) or sorted(set(inside))[:3]
            where = re.search(r'op_name="([^"]+)"', line)
            where = "/".join(where.group(1).split("/")[-3:]) if where else ""
            inner = f" [{', '.join(heavy)}]" if called else ""
            out[name] = f"{op} {shape.split('{')[0]}{inner} {where}"
    return out


def _ops_in(body: list[str]) -> list[str]:
    pattern = r"%?[\w.\-]+ = \S+ ([\w\-]+)\("
    return [m.group(1) for line in body if (m := re.match(pattern, line))]


def family_step(name: str):
    """(compiled train step, state, batch) on one device, one step per call."""
    import jax
    import jax.numpy as jnp

    from dlkit.train import build_model, create_train_state, make_optimizer, make_steps, objectives

    config = load_config(*FAMILIES[name][:2])
    x, y, num_classes = fake_batch(config, np.random.default_rng(0))
    model = build_model(config, num_classes=num_classes)
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    state = create_train_state(model, tx, jnp.asarray(x[:1]), seed=0)
    train, _ = make_steps(objectives.get(config.loss))
    batch = {"inputs": jnp.asarray(x), "targets": jnp.asarray(y)}
    compiled = train.lower(state, batch).compile()
    return compiled, state, batch, jax


def traced_ms_per_op(run, names: dict, jax, calls: int = 3) -> collections.Counter:
    """Traced ms per step of each thunk in `names`, from a jax.profiler trace of `calls` runs."""
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(calls):
            run()
        jax.profiler.stop_trace()
        path = sorted(glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True))[-1]
        events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            per_op[e["name"]] += e.get("dur", 0) / (1e3 * calls)  # ms per step
    return per_op


def profile_family(name: str, repeats: int, peak: float, top_n: int = 8) -> dict:
    """FLOPs, CPU time, achieved fraction of peak and top thunks of one family's step."""
    compiled, state, batch, jax = family_step(name)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0))
    box = [state]

    def run():
        box[0], sums = compiled(box[0], batch)
        jax.block_until_ready(sums["loss"])

    run()
    seconds = cpu_time(run, repeats)
    names = hlo_ops(compiled.as_text())
    per_op = traced_ms_per_op(run, names, jax)
    total = sum(per_op.values()) or 1.0
    by_kind = collections.Counter()
    for op, ms in per_op.items():
        by_kind[op_kind(names[op])] += ms
    top = [
        {"op": op, "ms": round(ms, 2), "share": round(ms / total, 3), "hlo": names[op]}
        for op, ms in per_op.most_common(top_n)
    ]
    return {
        "family": name,
        "gflop_per_step": flops / 1e9,
        "cpu_ms_per_step": 1e3 * seconds,
        "gflops_achieved": flops / seconds / 1e9,
        "fraction_of_peak": flops / seconds / peak,
        "traced_ms_per_step": total,
        "top_ops": top,
        "by_kind": {k: round(ms / total, 3) for k, ms in by_kind.most_common()},
    }


KINDS = (  # (kind, pattern in the thunk's description), first match wins
    ("rng (dropout masks)", r"threefry|random_bits|rng|dropout"),
    ("convolution", r"convolution"),
    ("dot", r"\bdot\b"),
    ("pooling", r"reduce-window|select-and-scatter|pool"),
    ("layernorm", r"ln_|LayerNorm|layer_norm|/norm"),
    ("attention elementwise (mask, softmax)", r"attend|attention_"),
    ("activation (gelu, tanh, relu)", r"gelu|tanh|relu|sigmoid"),
    ("softmax / loss", r"softmax|log_softmax|cross_entropy|logsumexp"),
    ("optimizer update", r"optax|adam|sgd|momentum|nesterov|scale_by|clip"),
    ("scan / while", r"while|scan"),
)


def op_kind(description: str) -> str:
    """A coarse kind for a thunk, from the ops inside it and its layer path."""
    return next((k for k, p in KINDS if re.search(p, description, re.I)), "other elementwise")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--threads", type=int, default=1, help="0: every usable CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul", type=int, default=1024)
    parser.add_argument("--top", type=int, default=8, help="top ops listed per family")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = parser.parse_args()
    flags = [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_enable_xprof_traceme=true"]
    if args.threads:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
        if args.threads == 1:
            flags.append("--xla_cpu_multi_thread_eigen=false")
    os.environ["XLA_FLAGS"] = " ".join(flags).strip()
    try:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
    except ImportError:
        pass
    info = machine()
    peaks = matmul_peak(args.matmul, args.repeats)
    peak = max(peaks.values())
    print(
        f"CPU: {info['model']}, ISA {' '.join(info['flags'])}, {info['cpus_usable']} CPUs used, "
        f"load {info['loadavg'][0]:.1f}, jax {info['jax']}, torch {info['torch']}; matmul peak "
        f"{args.matmul}^2 fp32: XLA {peaks['jax'] / 1e9:.1f}, torch {peaks['torch'] / 1e9:.1f} "
        "GFLOP/s (process CPU time)",
        flush=True,
    )
    records = []
    for name in [n for n in args.families.split(",") if n]:
        rec = profile_family(name, args.repeats, peak, args.top)
        rec["loadavg"] = os.getloadavg()
        records.append(rec)
        print(
            f"{name}: {rec['gflop_per_step']:.3f} GFLOP/step, {rec['cpu_ms_per_step']:.1f} ms "
            f"CPU/step, {rec['gflops_achieved']:.1f} GFLOP/s = {rec['fraction_of_peak']:.0%} of "
            f"peak; load {rec['loadavg'][0]:.1f}; top ops (traced {rec['traced_ms_per_step']:.1f}"
            " ms/step):",
            flush=True,
        )
        kinds = ", ".join(f"{k} {v:.0%}" for k, v in rec["by_kind"].items())
        print(f"    by kind: {kinds}")
        for t in rec["top_ops"]:
            print(f"   {t['share']:5.0%} {t['ms']:8.2f} ms  {t['op'][:28]:28s} {t['hlo'][:120]}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"cpu_profile-{slug(info['model'])}-{stamp}.json"
    payload = {"machine": info, "threads": args.threads, "matmul_peak": peaks, "families": records}
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
