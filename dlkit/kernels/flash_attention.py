"""Fused (flash) attention in Pallas: tiled forward and backward, S x S scores never in HBM.

Layout (B, S, H, D) like `jax.nn.dot_product_attention`; masks as `dlkit.ops.attention` (causal
top-left or bottom-right aligned, segment ids, kv_lengths; rows with no visible key -> zeros).
Internally q/k/v are padded to block multiples in S and to a power of two (>= 16) in D; padding is
masked, sliced off. On GPU the kernels lower through Triton (`pallas_call` with Triton compiler
params); elsewhere they run in Pallas interpret mode. Segment ids must be > -2**31 + 1 (the two
lowest ids mark padding).
"""

import functools
import math

import jax
import jax.numpy as jnp

from dlkit.kernels import flash_kernels as fk
from dlkit.ops import attention_dispatch
from dlkit.ops.attention import causal_alignment, causal_offset, check_qkv, split_segment_ids

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
MAX_HEAD_DIM = 256


def _pow2(n: int) -> int:
    """Smallest power of two >= max(n, 16) (Triton tiles and tensor-core dots want these)."""
    return max(16, 1 << (max(n, 1) - 1).bit_length())


def check_inputs(q, k, v, block_q, block_k) -> None:
    """Fails fast, naming the shapes, on rank/layout/dtype/head-count/block-size errors."""
    check_qkv(q, k, v)
    if q.dtype not in DTYPES:
        raise ValueError(
            f"flash_attention: dtype {q.dtype} of q {q.shape} must be float32, float16 or bfloat16"
        )
    if q.shape[1] < 1 or k.shape[1] < 1:
        raise ValueError(f"flash_attention: empty sequence: q {q.shape}, k {k.shape}")
    if q.shape[3] > MAX_HEAD_DIM:
        raise ValueError(
            f"flash_attention: head_dim {q.shape[3]} of q {q.shape} > {MAX_HEAD_DIM}; "
            "use implementation='chunked' or 'xla'"
        )
    for name, blk in (("block_q", block_q), ("block_k", block_k)):
        if blk is not None and (blk < 16 or blk & (blk - 1)):
            raise ValueError(f"flash_attention: {name}={blk} must be a power of two >= 16")


def launch_params(dp: int, interpret: bool):
    """((block_q, block_k, warps, stages) forward, same backward) for padded head_dim dp."""
    if interpret:  # big blocks are cheapest in interpret mode
        return (128, 128, 4, 3), (128, 128, 4, 2)
    if dp <= 64:
        return (128, 128, 4, 3), (64, 64, 4, 2)
    if dp <= 128:
        return (128, 64, 8, 3), (64, 64, 8, 2)
    return (64, 32, 8, 2), (32, 32, 8, 1)


def make_plan(q, k, *, causal, scale, block_q, block_k, interpret, use_ids, sanitize_kv):
    """The static Plan: blocks clamped to the lengths, padded lengths, launch parameters."""
    _, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    fwd, bwd = launch_params(_pow2(d), interpret)
    if block_q or block_k:
        fwd = (block_q or fwd[0], block_k or fwd[1]) + fwd[2:]
        bwd = (block_q or bwd[0], block_k or bwd[1]) + bwd[2:]
    bq, bqb = min(fwd[0], _pow2(sq)), min(bwd[0], _pow2(sq))
    bk, bkb = min(fwd[1], _pow2(sk)), min(bwd[1], _pow2(sk))
    offset = causal_offset(causal, sq, sk)
    return fk.Plan(
        causal=offset is not None,
        offset=offset or 0,
        scale=float(d**-0.5 if scale is None else scale),
        sq=sq,
        sk=sk,
        sq_pad=-(-sq // max(bq, bqb)) * max(bq, bqb),
        sk_pad=-(-sk // max(bk, bkb)) * max(bk, bkb),
        groups=h // hkv,
        block_q=bq,
        block_k=bk,
        block_q_bwd=bqb,
        block_k_bwd=bkb,
        use_ids=use_ids,
        sanitize_kv=sanitize_kv,
        interpret=bool(interpret),
        num_warps=fwd[2],
        num_stages=fwd[3],
        num_warps_bwd=bwd[2],
        num_stages_bwd=bwd[3],
    )


def _ids(plan, batch, segment_ids, kv_lengths):
    """Padded int32 (q_ids (B, Sq_pad), kv_ids (B, Sk_pad)); keys past kv_lengths get KV_PAD."""
    if not plan.use_ids:
        return None, None
    q_ids, kv_ids = split_segment_ids(segment_ids, plan.sq, plan.sk)
    if q_ids is None:
        q_ids = jnp.zeros((batch, plan.sq), jnp.int32)
        kv_ids = jnp.zeros((batch, plan.sk), jnp.int32)
    if q_ids.shape != (batch, plan.sq) or kv_ids.shape != (batch, plan.sk):
        raise ValueError(
            f"flash_attention: segment ids {q_ids.shape}, {kv_ids.shape} must be "
            f"(B, Sq) = ({batch}, {plan.sq}) and (B, Sk) = ({batch}, {plan.sk})"
        )
    q_ids, kv_ids = jnp.asarray(q_ids, jnp.int32), jnp.asarray(kv_ids, jnp.int32)
    if kv_lengths is not None:
        lengths = jnp.asarray(kv_lengths)
        if lengths.shape != (batch,):
            raise ValueError(
                f"flash_attention: kv_lengths must be (B,) = ({batch},), got {lengths.shape}"
            )
        visible = jnp.arange(plan.sk)[None, :] < lengths[:, None]
        kv_ids = jnp.where(visible, kv_ids, fk.KV_PAD)
    q_ids = jnp.pad(q_ids, ((0, 0), (0, plan.sq_pad - plan.sq)), constant_values=fk.Q_PAD)
    kv_ids = jnp.pad(kv_ids, ((0, 0), (0, plan.sk_pad - plan.sk)), constant_values=fk.KV_PAD)
    return q_ids, kv_ids


def _pad(x, seq, dp):
    """Zero-pads (B, S, H, D) to (B, seq, H, dp)."""
    return jnp.pad(x, ((0, 0), (0, seq - x.shape[1]), (0, 0), (0, dp - x.shape[3])))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(plan, q, k, v, q_ids, kv_ids):
    """Padded inputs -> (o (B, Sq_pad, H, Dp), lse (B, H, Sq_pad) natural log, float32)."""
    o, lse2 = fk.forward(plan, q, k, v, q_ids, kv_ids)
    return o, lse2 * math.log(2.0)


def _flash_fwd(plan, q, k, v, q_ids, kv_ids):
    o, lse2 = fk.forward(plan, q, k, v, q_ids, kv_ids)
    return (o, lse2 * math.log(2.0)), (q, k, v, q_ids, kv_ids, o, lse2)


def _flash_bwd(plan, res, cts):
    """dq, dk, dv by the dq and dk/dv kernels; d lse enters as delta - dlse (d lse / d s = p)."""
    q, k, v, q_ids, kv_ids, o, lse2 = res
    do, dlse = cts
    do = do.astype(o.dtype)
    f32 = jnp.float32
    delta = jnp.einsum("bshd,bshd->bhs", o.astype(f32), do.astype(f32)) - dlse.astype(f32)
    args = (q, k, v, do, lse2, delta, q_ids, kv_ids)
    dq = fk.backward_dq(plan, *args)
    g = plan.groups
    dk, dv = fk.backward_dkv(plan, *args, out_dtype=k.dtype if g == 1 else f32)
    if g > 1:  # GQA: sum over the query heads of each kv head's group
        b, s, hkv, dp = k.shape
        dk = dk.reshape(b, s, hkv, g, dp).sum(3).astype(k.dtype)
        dv = dv.reshape(b, s, hkv, g, dp).sum(3).astype(v.dtype)
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


@functools.partial(jax.jit, static_argnames=("causal", "scale", "block_q", "block_k", "interpret"))
def _attention(q, k, v, segment_ids, kv_lengths, *, causal, scale, block_q, block_k, interpret):
    """Plans, pads, runs the custom_vjp kernels and slices back: (out, lse)."""
    b, sq, _, d = q.shape
    use_ids = segment_ids is not None or kv_lengths is not None
    plan = make_plan(
        q, k, causal=causal, scale=scale, block_q=block_q, block_k=block_k,
        interpret=interpret, use_ids=use_ids, sanitize_kv=kv_lengths is not None,
    )  # fmt: skip
    q_ids, kv_ids = _ids(plan, b, segment_ids, kv_lengths)
    dp = _pow2(d)
    qp, kp, vp = _pad(q, plan.sq_pad, dp), _pad(k, plan.sk_pad, dp), _pad(v, plan.sk_pad, dp)
    o, lse = _flash(plan, qp, kp, vp, q_ids, kv_ids)
    return o[:, :sq, :, :d], lse[:, :, :sq]


def flash_attention_with_lse(
    q, k, v, *, causal=False, segment_ids=None, kv_lengths=None, scale=None,
    block_q=None, block_k=None, interpret=None,
):  # fmt: skip
    """(out (B,Sq,H,D), lse (B,H,Sq) float32, -inf for empty rows); both differentiable."""
    check_inputs(q, k, v, block_q, block_k)
    if scale is not None and not isinstance(scale, int | float):
        raise ValueError(f"flash_attention: scale must be a Python number, got {type(scale)}")
    if isinstance(segment_ids, list):
        segment_ids = tuple(segment_ids)
    return _attention(
        q, k, v, segment_ids, kv_lengths, causal=causal_alignment(causal) or False,
        scale=None if scale is None else float(scale), block_q=block_q, block_k=block_k,
        interpret=interpret,
    )  # fmt: skip


def flash_attention(
    q, k, v, *, causal=False, segment_ids=None, kv_lengths=None, scale=None,
    block_q=None, block_k=None, interpret=None,
):  # fmt: skip
    """out = softmax(q k^T * scale, masked) v; q (B,Sq,H,D), k/v (B,Sk,Hkv,D) -> (B,Sq,H,D)."""
    return flash_attention_with_lse(
        q, k, v, causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths, scale=scale,
        block_q=block_q, block_k=block_k, interpret=interpret,
    )[0]  # fmt: skip


attention_dispatch.register_kernel("pallas", flash_attention)  # dlkit.ops.dot_product_attention
