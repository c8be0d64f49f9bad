"""The Pallas flash-attention kernel against the fp32 reference, in interpret mode on CPU.

Every case checks outputs, log-sum-exp and the vjp (dq, dk, dv) with a random cotangent in one
compiled call; block sizes are small so several blocks, padding and causal skipping are exercised.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlkit.kernels import flash_attention, flash_attention_with_lse
from dlkit.kernels.flash_attention import make_plan
from dlkit.ops.attention import attention_lse_reference, attention_reference


def _inputs(b, sq, sk, h, hkv, d, seed=0, dtype=jnp.float32):
    """Random q (B,Sq,H,D), k/v (B,Sk,Hkv,D) and a cotangent like q."""
    r = np.random.default_rng(seed)
    shapes = [(b, sq, h, d), (b, sk, hkv, d), (b, sk, hkv, d), (b, sq, h, d)]
    return [jnp.asarray(r.standard_normal(s), dtype) for s in shapes]


# Interpret-mode kernels are large programs: XLA's cheapest CPU optimization level halves compiles.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
FAST_COMPILE = FAST_COMPILE if jax.default_backend() == "cpu" else None


@functools.partial(jax.jit, static_argnames=("fn", "kw_static"), compiler_options=FAST_COMPILE)
def _run(q, k, v, ct, mask_kw, *, fn, kw_static):
    """(out, lse, (dq, dk, dv)) of `fn` ("flash" or "reference") in one compiled call."""
    kw = dict(mask_kw, **dict(kw_static))
    if fn == "flash":
        (out, lse), vjp = jax.vjp(lambda *a: flash_attention_with_lse(*a, **kw), q, k, v)
        return out, lse, vjp((ct.astype(out.dtype), jnp.zeros_like(lse)))
    kw = {n: x for n, x in kw.items() if n not in ("block_q", "block_k")}
    out, vjp = jax.vjp(lambda *a: attention_reference(*a, **kw), q, k, v)
    return out, attention_lse_reference(q, k, v, **kw), vjp(ct.astype(out.dtype))


def _err(a, b):
    """max |a - b| in float32."""
    return float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))


def _check(q, k, v, ct, mask_kw=None, tol=2e-5, **kw):
    """Flash vs reference (fp32): out, lse (same -inf rows) and dq, dk, dv within tol * scale."""
    mask_kw = mask_kw or {}
    static = tuple(sorted(kw.items()))
    got = _run(q, k, v, ct, mask_kw, fn="flash", kw_static=static)
    ref = _run(q, k, v, ct, mask_kw, fn="reference", kw_static=static)
    out, lse, grads = got
    assert out.shape == q.shape and out.dtype == q.dtype
    assert _err(out, ref[0]) <= tol * max(1.0, float(jnp.max(jnp.abs(ref[0]))))
    assert bool(jnp.all(jnp.isneginf(lse) == jnp.isneginf(ref[1]))), "empty rows differ"
    finite = jnp.isfinite(ref[1])
    assert _err(jnp.where(finite, lse, 0), jnp.where(finite, ref[1], 0)) <= tol * 10
    for name, g, r in zip("qkv", grads, ref[2], strict=True):
        assert g.shape == r.shape and bool(jnp.all(jnp.isfinite(g))), name
        assert _err(g, r) <= tol * max(1.0, float(jnp.max(jnp.abs(r)))), f"d{name}"
    return got


CASES = {  # name: (B, Sq, Sk, H, Hkv, D, causal, block)
    "len1": (1, 1, 1, 2, 2, 32, False, 16),
    "aligned": (2, 64, 64, 2, 2, 32, False, 16),
    "len1_causal": (2, 1, 1, 2, 2, 32, True, 16),
    "len7_causal": (2, 7, 7, 2, 2, 32, True, 16),
    "len113_causal": (1, 113, 113, 2, 2, 64, True, 32),
    "len113": (1, 113, 113, 2, 2, 32, False, 32),
    "len200": (2, 200, 200, 2, 2, 32, False, 64),
    "len200_causal": (1, 200, 200, 2, 2, 32, True, 64),
    "sq_lt_sk_causal": (1, 40, 73, 2, 2, 32, True, 16),
    "sq_gt_sk_causal": (1, 73, 40, 2, 2, 32, True, 16),
    "sq_ne_sk": (2, 17, 100, 2, 2, 32, False, 32),
    "d64": (1, 48, 48, 2, 2, 64, True, 16),
    "d72_causal": (1, 50, 50, 2, 2, 72, True, 16),
    "d72": (2, 33, 21, 2, 2, 72, False, 16),
    "d128": (1, 33, 33, 2, 2, 128, True, 16),
    "gqa": (2, 37, 37, 4, 2, 32, True, 16),
    "mqa": (1, 29, 45, 4, 1, 32, False, 16),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name):
    b, sq, sk, h, hkv, d, causal, block = CASES[name]
    q, k, v, ct = _inputs(b, sq, sk, h, hkv, d, seed=len(name))
    _check(q, k, v, ct, causal=causal, block_q=block, block_k=block)


def test_length_1023_large_blocks():
    q, k, v, ct = _inputs(1, 1023, 1023, 1, 1, 32, seed=3)
    _check(q, k, v, ct, tol=5e-5, causal=True, block_q=128, block_k=128)


def test_default_blocks_and_scale():
    q, k, v, ct = _inputs(1, 20, 30, 2, 2, 32, seed=4)
    _check(q, k, v, ct, scale=0.3)


def _segments(b, s, n, seed):
    """Sorted (packed) segment ids (B, S) with up to n segments."""
    return jnp.asarray(np.sort(np.random.default_rng(seed).integers(0, n, (b, s)), axis=1))


MASKS = {  # name: (Sq, Sk, causal, mask kwargs builder)
    "segments": (45, 45, False, lambda b: {"segment_ids": _segments(b, 45, 4, 1)}),
    "segments_causal": (45, 45, True, lambda b: {"segment_ids": _segments(b, 45, 4, 2)}),
    "segment_pair": (
        30,
        50,
        False,
        lambda b: {"segment_ids": (_segments(b, 30, 3, 3), _segments(b, 50, 3, 4))},
    ),  # noqa: E501
    "segment_pair_empty_rows": (
        20,
        20,
        False,
        lambda b: {"segment_ids": (jnp.full((b, 20), 7), _segments(b, 20, 2, 5).at[0].set(7))},
    ),  # noqa: E501
    "kv_lengths": (33, 47, False, lambda b: {"kv_lengths": jnp.array([47, 20, 0][:b])}),
    "kv_lengths_causal": (40, 40, True, lambda b: {"kv_lengths": jnp.array([17, 40, 1][:b])}),
    "all_masks": (
        50,
        50,
        True,
        lambda b: {"segment_ids": _segments(b, 50, 3, 6), "kv_lengths": jnp.array([44, 9, 50][:b])},
    ),  # noqa: E501
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_masks_match_reference(name):
    sq, sk, causal, build = MASKS[name]
    b = 3 if "kv_lengths" in name or name == "all_masks" else 2
    q, k, v, ct = _inputs(b, sq, sk, 2, 1 if name == "all_masks" else 2, 32, seed=len(name))
    _check(q, k, v, ct, build(b), causal=causal, block_q=16, block_k=16)


def test_empty_rows_are_zero():
    q, k, v, ct = _inputs(2, 9, 12, 2, 2, 32)
    out, lse, grads = _check(q, k, v, ct, {"kv_lengths": jnp.array([0, 5])}, block_q=16)
    assert bool(jnp.all(out[0] == 0)) and bool(jnp.all(jnp.isneginf(lse[0])))
    assert bool(jnp.all(grads[0][0] == 0))


def test_nan_in_padded_keys_does_not_leak():
    q, k, v, ct = _inputs(2, 24, 40, 2, 2, 32, seed=8)
    lengths = jnp.array([13, 40])
    pad = (jnp.arange(40) >= lengths[:, None])[:, :, None, None]  # (B, Sk, 1, 1)
    kn, vn = jnp.where(pad, jnp.nan, k), jnp.where(pad, jnp.nan, v)
    static = (("block_k", 16), ("block_q", 16), ("causal", False))
    out, _, (dq, dk, dv) = _run(
        q, kn, vn, ct, {"kv_lengths": lengths}, fn="flash", kw_static=static
    )
    ref = _run(q, k, v, ct, {"kv_lengths": lengths}, fn="reference", kw_static=static)
    assert _err(out, ref[0]) < 1e-4 and _err(dq, ref[2][0]) < 1e-4
    assert bool(jnp.all(jnp.where(pad, dk, 0) == 0))
    assert _err(jnp.where(pad, 0, dk), jnp.where(pad, 0, ref[2][1])) < 1e-4
    assert bool(jnp.all(jnp.where(pad, dv, 0) == 0))


def test_causal_blocks_above_diagonal_are_skipped():
    # Keys >= Sq = 32 are never visible under top-left causal masking. Filled with NaN, they would
    # poison p @ v (0 * NaN) if their blocks were loaded and masked; skipped, they cannot.
    q, k, v, ct = _inputs(1, 32, 96, 2, 2, 32, seed=9)
    far = (jnp.arange(96) >= 32)[None, :, None, None]
    kn, vn = jnp.where(far, jnp.nan, k), jnp.where(far, jnp.nan, v)
    static = (("block_k", 16), ("block_q", 16), ("causal", True))
    out, lse, (dq, dk, dv) = _run(q, kn, vn, ct, {}, fn="flash", kw_static=static)
    ref = _run(q, k, v, ct, {}, fn="reference", kw_static=static)
    assert _err(out, ref[0]) < 1e-4 and _err(lse, ref[1]) < 1e-4 and _err(dq, ref[2][0]) < 1e-4
    assert bool(jnp.all(dk[:, 32:] == 0)) and bool(jnp.all(dv[:, 32:] == 0))


def test_lse_gradient():
    q, k, v, ct = _inputs(1, 21, 21, 2, 2, 32, seed=10)
    ct_lse = jnp.asarray(np.random.default_rng(1).standard_normal((1, 2, 21)), jnp.float32)
    kw = dict(causal=True, segment_ids=_segments(1, 21, 2, 0))

    def flash(q, k, v):
        return flash_attention_with_lse(q, k, v, block_q=16, block_k=16, **kw)

    def ref(q, k, v):
        return attention_reference(q, k, v, **kw), attention_lse_reference(q, k, v, **kw)

    vjp = lambda f, *a: jax.vjp(f, *a)[1]((ct, ct_lse))  # noqa: E731
    grads = jax.jit(vjp, static_argnums=0, compiler_options=FAST_COMPILE)
    got, want = grads(flash, q, k, v), grads(ref, q, k, v)
    for g, w in zip(got, want, strict=True):
        assert _err(g, w) < 1e-4


def test_deterministic():
    q, k, v, ct = _inputs(2, 45, 45, 4, 2, 32, seed=11)
    kw = {"segment_ids": _segments(2, 45, 3, 1)}
    static = (("block_k", 16), ("block_q", 16), ("causal", True))
    a = _run(q, k, v, ct, kw, fn="flash", kw_static=static)
    b = _run(q, k, v, ct, kw, fn="flash", kw_static=static)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("dtype,floor", [(jnp.bfloat16, 4e-3), (jnp.float16, 5e-4)])
def test_low_precision_within_reference_error(dtype, floor):
    # Same rounded inputs; error bound = 3x the error of the reference run in low precision.
    q, k, v, ct = _inputs(2, 70, 70, 4, 2, 64, seed=12, dtype=dtype)
    f32 = [x.astype(jnp.float32) for x in (q, k, v, ct)]
    static = (("block_k", 32), ("block_q", 16), ("causal", True))
    exact = _run(*f32, {}, fn="reference", kw_static=static)
    low = _run(q, k, v, ct, {}, fn="reference", kw_static=static)
    got = _run(q, k, v, ct, {}, fn="flash", kw_static=static)
    assert got[0].dtype == dtype and all(g.dtype == dtype for g in got[2])
    pairs = [(got[0], low[0], exact[0])] + list(zip(got[2], low[2], exact[2], strict=True))
    for g, lo, ex in pairs:
        scale = float(jnp.max(jnp.abs(ex)))
        assert _err(g, ex) <= 3 * _err(lo, ex) + floor * scale, (_err(g, ex), _err(lo, ex))
    assert _err(got[1], exact[1]) < 2e-2  # lse is float32 from the low-precision scores


def test_interpret_is_automatic_off_gpu():
    q, k, _, _ = _inputs(1, 4, 4, 1, 1, 32)
    plan = make_plan(
        q, k, causal=False, scale=None, block_q=None, block_k=None, interpret=None,
        use_ids=False, sanitize_kv=False,
    )  # fmt: skip
    assert plan.interpret == (jax.default_backend() != "gpu") and plan.scale == 32**-0.5
    assert plan.sq_pad % plan.block_q == 0 and plan.block_q >= 16


@pytest.mark.parametrize(
    "shapes,dtypes,kw,match",
    [
        (((2, 4, 8), (2, 4, 8), (2, 4, 8)), None, {}, r"rank-4.*\(2, 4, 8\)"),
        (((1, 4, 2, 8), (1, 5, 2, 8), (1, 6, 2, 8)), None, {}, r"k \(1, 5, 2, 8\) and v"),
        (((1, 4, 2, 8), (1, 4, 2, 16), (1, 4, 2, 16)), None, {}, r"head_dim.*\(1, 4, 2, 8\)"),
        (((1, 4, 3, 8), (1, 4, 2, 8), (1, 4, 2, 8)), None, {}, r"3 query heads.*2 KV heads"),
        (((1, 4, 2, 8),) * 3, (jnp.float32, jnp.bfloat16, jnp.float32), {}, "dtypes differ"),
        (
            ((1, 4, 2, 8),) * 3,
            (jnp.int32,) * 3,
            {},
            r"needs floating q, k, v; got int32 for q \(1, 4, 2, 8\)",
        ),
        (((1, 4, 2, 512),) * 3, None, {}, r"head_dim 512.*> 256"),
        (((1, 4, 2, 8),) * 3, None, {"block_q": 24}, "block_q=24 must be a power of two"),
        (((1, 4, 2, 8),) * 3, None, {"kv_lengths": jnp.array([1, 2])}, r"kv_lengths.*\(1,\)"),
        (
            ((1, 4, 2, 8), (1, 6, 2, 8), (1, 6, 2, 8)),
            None,
            {"segment_ids": jnp.zeros((1, 4))},
            "one segment_ids array",
        ),  # fmt: skip
    ],
)
def test_bad_arguments_name_the_shapes(shapes, dtypes, kw, match):
    dtypes = dtypes or (jnp.float32,) * 3
    q, k, v = (jnp.zeros(s, t) for s, t in zip(shapes, dtypes, strict=True))
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, v, **kw)


def test_forward_and_backward_blocks_may_differ(monkeypatch):
    # As on GPU (forward 128 x 64, backward 64 x 64): Sq is padded for the larger q block.
    fa = importlib.import_module("dlkit.kernels.flash_attention")  # the module, not the function
    monkeypatch.setattr(fa, "launch_params", lambda dp, interpret: ((32, 16, 4, 3), (16, 32, 4, 2)))
    q, k, v, ct = _inputs(1, 35, 50, 4, 2, 32, seed=13)
    seg = (_segments(1, 35, 2, 3), _segments(1, 50, 2, 4))
    _check(q, k, v, ct, {"segment_ids": seg}, causal=True)
    _check(q[:, :, :, :16], k[:, :35, :, :16], v[:, :35, :, :16], ct[..., :16], causal=True)


LOWERINGS = {  # name: (B, Sq, Sk, H, Hkv, D, dtype, causal, segment ids, kv_lengths)
    "goal_bf16_causal": (2, 4096, 4096, 16, 16, 128, jnp.bfloat16, True, False, False),
    "goal_bf16": (2, 16384, 16384, 16, 16, 128, jnp.bfloat16, False, False, False),
    "d64_fp16_gqa": (2, 1000, 1000, 8, 2, 64, jnp.float16, True, False, True),
    "d72_fp32_masks": (1, 113, 200, 4, 1, 72, jnp.float32, True, True, True),
    "d256_len1": (1, 1, 1, 2, 2, 256, jnp.bfloat16, False, True, False),
}


@pytest.mark.parametrize("name", sorted(LOWERINGS))
def test_gpu_path_lowers_to_triton(name):
    # Cross-platform lowering runs the Pallas Triton lowering rules here, without a GPU: block
    # shapes, primitives and launch parameters of all three kernels must be accepted.
    b, sq, sk, h, hkv, d, dtype, causal, seg, lengths = LOWERINGS[name]
    q, kv = jax.ShapeDtypeStruct((b, sq, h, d), dtype), jax.ShapeDtypeStruct((b, sk, hkv, d), dtype)
    ids = (jax.ShapeDtypeStruct((b, sq), jnp.int32), jax.ShapeDtypeStruct((b, sk), jnp.int32))
    lens = jax.ShapeDtypeStruct((b,), jnp.int32)

    def grads(q, k, v, ids, lens):
        kw = dict(segment_ids=ids if seg else None, kv_lengths=lens if lengths else None)
        fn = lambda q, k, v: flash_attention(q, k, v, causal=causal, interpret=False, **kw)  # noqa: E731
        out, vjp = jax.vjp(fn, q, k, v)
        return vjp(out)

    lowered = jax.jit(grads).trace(q, kv, kv, ids, lens).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert text.count("custom_call @__gpu$xla.gpu.triton(") == 3, "fwd, dq, dk/dv"
    for kernel in ("dlkit_flash_fwd", "dlkit_flash_dq", "dlkit_flash_dkv"):
        assert kernel in text
