"""Device correctness sweep of flash attention vs the fp32 reference, without pytest.

For the GPU machine (`benchmarks/gpu_check.sh`): every mask kind, odd lengths, Sq != Sk, head dims,
GQA and low precision, natively compiled. `python -m dlkit.extras.flash_check [--smoke]`.
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dlkit.kernels.flash_attention import flash_attention_with_lse
from dlkit.ops.attention import attention_lse_reference, attention_reference

# name: (B, Sq, Sk, H, Hkv, D, causal, masks, dtype); masks: "" | "seg" | "len" | "seg+len"
CASES = {
    "len1": (2, 1, 1, 2, 2, 64, False, "", "float32"),
    "len7_causal": (2, 7, 7, 2, 2, 64, True, "", "float32"),
    "len113_causal_d72": (1, 113, 113, 4, 4, 72, True, "", "float32"),
    "len200_d32": (2, 200, 200, 2, 2, 32, False, "", "float32"),
    "len1023_causal": (1, 1023, 1023, 2, 2, 128, True, "", "float32"),
    "sq_gt_sk_causal": (1, 300, 129, 4, 2, 64, True, "", "float32"),
    "sq_lt_sk": (2, 100, 333, 4, 1, 128, False, "", "float32"),
    "d256": (1, 130, 130, 2, 2, 256, True, "", "float32"),
    "segments_causal": (2, 257, 257, 4, 2, 64, True, "seg", "float32"),
    "kv_lengths": (3, 190, 190, 2, 2, 128, False, "len", "float32"),
    "all_masks_gqa": (3, 211, 211, 8, 2, 64, True, "seg+len", "float32"),
    "bf16_causal": (2, 512, 512, 4, 4, 128, True, "", "bfloat16"),
    "bf16_masks": (2, 333, 333, 4, 2, 64, True, "seg+len", "bfloat16"),
    "fp16": (2, 256, 256, 4, 4, 64, False, "", "float16"),
}
SMOKE = ("len7_causal", "all_masks_gqa", "bf16_masks")
SMOKE_SHRINK = dict(len7_causal=7, all_masks_gqa=37, bf16_masks=29)  # Sq = Sk on CPU


def _masks(kind, b, s, rng):
    """Mask kwargs: sorted segment ids (B, S) and/or kv_lengths (B,) (one of them 0 if B > 2)."""
    kw = {}
    if "seg" in kind:
        kw["segment_ids"] = jnp.asarray(np.sort(rng.integers(0, 4, (b, s)), axis=1))
    if "len" in kind:
        kw["kv_lengths"] = jnp.asarray([s, max(1, s // 3), 0][:b])
    return kw


def _outputs(fn, causal, q, k, v, ct, masks):
    """(out, lse, dq, dk, dv) of fn = "flash" or "reference" with cotangent ct on out."""
    kw = dict(masks, causal=causal)
    if fn == "flash":
        (out, lse), vjp = jax.vjp(lambda *a: flash_attention_with_lse(*a, **kw), q, k, v)
        return (out, lse, *vjp((ct, jnp.zeros_like(lse))))
    out, vjp = jax.vjp(lambda *a: attention_reference(*a, **kw), q, k, v)
    return (out, attention_lse_reference(q, k, v, **kw), *vjp(ct))


def check_case(name, spec, seq=None):
    """{name, errors, bounds, ok}: fp32 bound 1e-4 x scale; low precision 3x reference's error."""
    b, sq, sk, h, hkv, d, causal, kind, dtype = spec
    if seq:
        sq = sk = seq
    rng = np.random.default_rng(len(name))
    shapes = [(b, sq, h, d), (b, sk, hkv, d), (b, sk, hkv, d), (b, sq, h, d)]
    x32 = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    xlo = [x.astype(dtype) for x in x32]
    x32 = [x.astype(jnp.float32) for x in xlo]  # the same rounded values
    masks = _masks(kind, b, sk, rng)
    run = jax.jit(_outputs, static_argnums=(0, 1))
    got = run("flash", causal, *xlo, masks)
    exact = run("reference", causal, *x32, masks)
    low = run("reference", causal, *xlo, masks) if dtype != "float32" else None
    errs, bounds = [], []
    for i, (g, e) in enumerate(zip(got, exact, strict=True)):
        g, e = g.astype(jnp.float32), e.astype(jnp.float32)
        fin = jnp.isfinite(e)
        err = float(jnp.max(jnp.where(fin, jnp.abs(g - e), 0.0)))
        err = err if bool(jnp.all(jnp.isfinite(g) == fin)) else float("inf")
        scale = max(1.0, float(jnp.max(jnp.where(fin, jnp.abs(e), 0.0))))
        if low is None:
            bound = 1e-4 * scale
        else:
            lo = low[i].astype(jnp.float32)
            lerr = float(jnp.max(jnp.where(fin, jnp.abs(lo - e), 0.0)))
            bound = 3 * lerr + (4e-3 if dtype == "bfloat16" else 5e-4) * scale
        errs.append(err)
        bounds.append(bound)
    ok = all(e <= bd for e, bd in zip(errs, bounds, strict=True))
    return dict(name=name, shape=[b, sq, sk, h, hkv, d], errors=errs, bounds=bounds, ok=ok)


def run_checks(smoke=False, json_path=None) -> bool:
    """Runs the sweep (3 tiny cases when smoke), prints one line per case; True if all pass."""
    names = SMOKE if smoke else tuple(CASES)
    print(f"flash_check: jax {jax.__version__}, {jax.devices()[0].device_kind}", flush=True)
    results = []
    for name in names:
        t = time.time()
        r = check_case(name, CASES[name], SMOKE_SHRINK.get(name) if smoke else None)
        r["seconds"] = round(time.time() - t, 2)
        results.append(r)
        errs = " ".join(f"{e:.1e}/{bd:.1e}" for e, bd in zip(r["errors"], r["bounds"], strict=True))
        print(f"{'PASS' if r['ok'] else 'FAIL'} {name:20s} out,lse,dq,dk,dv err/bound {errs}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    ok = all(r["ok"] for r in results)
    print(f"flash_check: {sum(r['ok'] for r in results)}/{len(results)} passed", flush=True)
    return ok


if __name__ == "__main__":
    sys.exit(0 if run_checks(smoke="--smoke" in sys.argv) else 1)
