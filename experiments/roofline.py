"""The memory hierarchy as a roofline: measure this machine's peak matmul FLOP/s and memory
bandwidth, then place the MLP's layers, the CNN's convolutions and pooling, and attention
(reference against chunked) by arithmetic intensity and achieved FLOP/s; a table says which are
memory-bound and which compute-bound. Runs on CPU, and on GPU where present.

  python experiments/roofline.py --workdir=workdirs/roofline
"""

import json
import pathlib

import jax
import jax.numpy as jnp
from absl import app, flags

from dlkit import models, ops
from dlkit.extras import plotting, profile
from dlkit.kernels.flash_attention import flash_attention
from dlkit.nn.cnn import CNN
from dlkit.ops.attention import attention_reference
from dlkit.ops.attention_dispatch import pallas_available
from dlkit.ops.chunked_attention import chunked_attention

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/roofline", "Output directory.")
_MATMUL = flags.DEFINE_integer("matmul_size", 1024, "Peak FLOP/s: n x n @ n x n float32.")
_STREAM_MB = flags.DEFINE_integer("stream_mb", 128, "Memory bandwidth: sum(x) over this many MB.")
_CACHE_MB = flags.DEFINE_float("cache_mb", 4, "Cache bandwidth: sum(x) over this many MB.")
_BATCH = flags.DEFINE_integer("batch", 512, "Batch size of the MLP and CNN layers.")
_SEQ = flags.DEFINE_integer("seq_len", 1024, "Attention sequence length (B=1, H=4, D=64).")
_BLOCK = flags.DEFINE_integer("block_k", 256, "Chunked attention key block.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls per function (the best is kept).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny settings for tests.")


def peaks(n: int, stream_mb: int, cache_mb: float, repeats: int) -> dict:
    """Measured peaks, best of `repeats` calls: FLOP/s of float32 matmuls up to n x n, and the
    read bandwidth of sum(x) over stream_mb MB (beyond the caches) and over cache_mb MB."""
    flops = 0.0
    for m in sorted({min(256, n), n // 2, n}):
        a = jax.random.normal(jax.random.PRNGKey(0), (m, m))
        c = profile.profile(jnp.matmul, a, a, repeats=repeats, stat="min")
        flops = max(flops, c.flops_per_sec)
    out = {"flops_per_sec": flops}
    for key, mb in (("bytes_per_sec", stream_mb), ("cache_bytes_per_sec", cache_mb)):
        x = jnp.ones((int(mb * 2**20) // 4,), jnp.float32)
        out[key] = profile.profile(jnp.sum, x, repeats=repeats, stat="min").bytes_per_sec
    return out


def mlp_costs(batch: int, repeats: int, hidden=(128, 64)):
    """The notes' MLP 784 -> 128 -> 64 -> 10: each Dense layer, plus one ReLU on its own."""
    model = models.get("mlp", num_classes=10, hidden_sizes=hidden)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, 784))
    costs = profile.profile_layers(
        model, model.init(jax.random.PRNGKey(1), x), x, repeats=repeats, stat="min"
    )
    h = jnp.ones((batch, hidden[0]))
    return costs + [
        profile.profile(ops.relu, h, name=f"relu {h.shape}", repeats=repeats, stat="min")
    ]


def cnn_costs(batch: int, repeats: int):
    """The CNN of dlkit.nn.cnn (conv 3x3 -> relu -> max pool, twice; dense) on 28x28x1."""
    try:
        model = models.get("cnn", num_classes=10)
    except Exception:  # the family may not be registered yet: use the module directly
        model = CNN(num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, 28, 28, 1))
    return profile.profile_layers(
        model, model.init(jax.random.PRNGKey(1), x), x, repeats=repeats, stat="min"
    )


def attention_costs(seq: int, block: int, repeats: int, b=1, h=4, d=64):
    """Reference attention (XLA counts) and chunked (counted by hand: XLA counts a scan once)."""
    q, k, v = jax.random.normal(jax.random.PRNGKey(0), (3, b, seq, h, d))
    ref = profile.profile(
        attention_reference,
        q,
        k,
        v,
        name=f"attention reference S={seq}",
        repeats=repeats,
        stat="min",
    )
    nblocks = -(-seq // block)
    io = 4 * (4 * b * seq * h * d)  # read q, k, v, write out (float32)
    state = 4 * nblocks * b * h * seq * (d + 2 * d + 4)  # per block: q, o read+write, m, l
    flops = 4 * b * h * seq * seq * d  # q k^T and p v
    chunked = profile.profile(
        lambda q, k, v: chunked_attention(q, k, v, block_k=block),
        q,
        k,
        v,
        name=f"attention chunked S={seq} block={block}",
        repeats=repeats,
        stat="min",
        flops=flops,
        bytes_accessed=io + state,
    )
    costs = [ref, chunked]
    if jax.default_backend() == "gpu" and pallas_available():  # the Pallas flash kernel
        costs.append(
            profile.profile(
                flash_attention,
                q,
                k,
                v,
                name=f"attention flash S={seq}",
                repeats=repeats,
                stat="min",
                flops=flops,
                bytes_accessed=io,
            )
        )
    return costs


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    smoke = _SMOKE.value
    n, mb, cache_mb, batch, seq, reps = (
        (128, 4, 0.5, 16, 128, 2)
        if smoke
        else (
            _MATMUL.value,
            _STREAM_MB.value,
            _CACHE_MB.value,
            _BATCH.value,
            _SEQ.value,
            _REPEATS.value,
        )
    )
    block = min(_BLOCK.value, seq // 2)
    workdir = pathlib.Path(_WORKDIR.value)
    peak = peaks(n, mb, cache_mb, reps)
    ridge = peak["flops_per_sec"] / peak["bytes_per_sec"]
    device = f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
    print(
        f"{device}: peak {peak['flops_per_sec'] / 1e9:.1f} GFLOP/s, "
        f"{peak['bytes_per_sec'] / 1e9:.1f} GB/s memory, "
        f"{peak['cache_bytes_per_sec'] / 1e9:.1f} GB/s cache, ridge {ridge:.1f} FLOP/byte",
        flush=True,
    )
    groups = {
        "MLP": mlp_costs(batch, reps),
        "CNN": cnn_costs(max(batch // 4, 1), reps),
        "attention": attention_costs(seq, block, reps),
    }
    rows, points = [], []
    for group, costs in groups.items():
        for c in costs:
            roof = min(peak["flops_per_sec"], c.intensity * peak["bytes_per_sec"])
            rows.append(
                {
                    "group": group,
                    "op": c.name,
                    "FLOPs": c.flops,
                    "bytes": c.bytes_accessed,
                    "FLOP/byte": c.intensity,
                    "time (us)": 1e6 * c.seconds,
                    "GFLOP/s": c.flops_per_sec / 1e9,
                    "% of roof": 100 * c.flops_per_sec / roof,
                    "bound": profile.bound(c, peak["flops_per_sec"], peak["bytes_per_sec"]),
                    "counts": "by hand" if c.source == "given" else "XLA",
                }
            )
            points.append((f"{group}: {c.name}", c.intensity, c.flops_per_sec))
    plotting.roofline(
        workdir / "roofline.png",
        peak["flops_per_sec"],
        peak["bytes_per_sec"],
        points,
        extra_roofs={f"cache ({cache_mb:g} MB sum)": peak["cache_bytes_per_sec"]},
        title=f"{device}: {mb} MB memory roof (solid), cache roof (dashed)",
    )
    title = (
        f"Roofline on {device}: peak {peak['flops_per_sec'] / 1e9:.1f} GFLOP/s (matmul), "
        f"{peak['bytes_per_sec'] / 1e9:.1f} GB/s (sum over {mb} MB), "
        f"{peak['cache_bytes_per_sec'] / 1e9:.1f} GB/s (sum over {cache_mb:g} MB, cache), "
        f"ridge {ridge:.1f} FLOP/byte; times are the best of {reps} calls"
    )
    print(plotting.write_table(workdir / "table.md", rows, title=title))
    (workdir / "results.json").write_text(
        json.dumps({"device": device, **peak, "ridge": ridge, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    app.run(main)
