"""Pallas kernel bodies for flash attention: forward, dq and dk/dv (FlashAttention-2 style).

Every kernel sees one (batch, head) pair and one block of rows, layout (B, S, H, D) squeezed to
(rows, Dp). Scores are kept in base 2: s2 = q.k * scale * log2(e), lse2 = log2 sum_j 2^s2_j.
Masked work is confined to the last blocks of each loop (the causal diagonal, a partial last key
block); blocks above the causal diagonal are never visited.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

LOG2E = math.log2(math.e)
KV_PAD = -(2**31)  # kv segment id of keys that are padding or beyond kv_lengths
Q_PAD = -(2**31) + 1  # q segment id of padded query rows (matches no key)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static kernel plan: lengths before padding, blocks, masks and GPU launch parameters."""

    causal: bool
    offset: int  # causal: query i sees key j iff j <= i + offset (0 top-left, Sk - Sq bottom-right)
    scale: float
    sq: int
    sk: int
    sq_pad: int
    sk_pad: int
    groups: int  # query heads per kv head
    block_q: int
    block_k: int
    block_q_bwd: int
    block_k_bwd: int
    use_ids: bool  # segment ids and/or kv_lengths given: masks come from id arrays
    sanitize_kv: bool  # kv_lengths given: keys/values past the length are zeroed (NaN-proof)
    interpret: bool
    num_warps: int
    num_stages: int
    num_warps_bwd: int
    num_stages_bwd: int


def _dot_nt(a, b):
    """a (M, D) @ b (N, D)^T -> (M, N) float32 (IEEE fp32 on GPU for fp32 inputs, not TF32)."""
    prec = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    dims = (((1,), (1,)), ((), ()))
    return lax.dot_general(a, b, dims, precision=prec, preferred_element_type=jnp.float32)


def _dot_nn(a, b):
    """a (M, K) @ b (K, N) -> (M, N) float32."""
    prec = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    dims = (((1,), (0,)), ((), ()))
    return lax.dot_general(a, b, dims, precision=prec, preferred_element_type=jnp.float32)


def _dot_tn(a, b):
    """a (K, M)^T @ b (K, N) -> (M, N) float32."""
    prec = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    dims = (((0,), (0,)), ((), ()))
    return lax.dot_general(a, b, dims, precision=prec, preferred_element_type=jnp.float32)


def _mask(plan, qpos, kpos, qid, kid, *, pad_k):
    """Boolean (bq, bk): causal (k <= q + offset), equal segment ids, and (pad_k) k < Sk."""
    m = None
    if plan.causal:
        m = qpos[:, None] + plan.offset >= kpos[None, :]
    if plan.use_ids:
        same = qid[:, None] == kid[None, :]
        m = same if m is None else jnp.logical_and(m, same)
    if pad_k and not plan.use_ids and plan.sk % plan.block_k:
        inside = jnp.broadcast_to(kpos[None, :] < plan.sk, (qpos.shape[0], kpos.shape[0]))
        m = inside if m is None else jnp.logical_and(m, inside)
    return m


def _load_kv(plan, k_ref, v_ref, kid_ref, sl):
    """k, v (bk, Dp) rows `sl` (zeroed past kv_lengths when sanitizing) and kv ids (bk,)."""
    k, v = k_ref[sl, :], v_ref[sl, :]
    kid = kid_ref[sl] if plan.use_ids else None
    if plan.sanitize_kv:
        ok = (kid != KV_PAD)[:, None]
        k, v = jnp.where(ok, k, jnp.zeros_like(k)), jnp.where(ok, v, jnp.zeros_like(v))
    return k, v, kid


def _split_refs(plan, refs, n_in):
    """(inputs, qid_ref, kid_ref, outputs): id refs are the two inputs after n_in, if used."""
    if plan.use_ids:
        return refs[:n_in], refs[n_in], refs[n_in + 1], refs[n_in + 2 :]
    return refs[:n_in], None, None, refs[n_in:]


def _min(a, b):
    """min of loop bounds: a Python int when both are (static loops stay static)."""
    return min(a, b) if isinstance(a, int) and isinstance(b, int) else jnp.minimum(a, b)


def _loop(lo, hi, body, carry):
    """fori_loop over [lo, hi), emitting nothing when the bounds are static and the range empty."""
    if isinstance(lo, int) and isinstance(hi, int) and lo >= hi:
        return carry
    return lax.fori_loop(lo, hi, body, carry)


def _kv_loop_bounds(plan, i, bq, bk, *, pad_k):
    """(n_free, n_end) for query block i: blocks [0, n_free) need no mask, [.., n_end) do."""
    n_real = pl.cdiv(plan.sk, bk)
    if plan.causal:  # row r sees keys <= r + offset; a block is free if its first row sees it all
        last = jnp.maximum((i + 1) * bq + plan.offset, 0)
        n_end = jnp.minimum(lax.div(last + bk - 1, bk), n_real)
        n_free = jnp.minimum(lax.div(jnp.maximum(i * bq + plan.offset + 1, 0), bk), n_end)
    else:
        n_end = n_free = n_real
    if plan.use_ids:
        n_free = 0
    elif pad_k and plan.sk % bk:
        n_free = _min(n_free, plan.sk // bk)
    return n_free, n_end


def fwd_kernel(*refs, plan: Plan):
    """o = softmax(q k^T * scale) v for one (bq, Dp) block of q; lse2 (bq,) saved for backward."""
    (q_ref, k_ref, v_ref), qid_ref, kid_ref, (o_ref, lse_ref) = _split_refs(plan, refs, 3)
    bq, bk = plan.block_q, plan.block_k
    i = pl.program_id(0)
    q = q_ref[...]
    qid = qid_ref[...] if plan.use_ids else None
    qpos = i * bq + lax.broadcasted_iota(jnp.int32, (bq,), 0)
    c = plan.scale * LOG2E

    def body(j, carry, masked):
        acc, m, den = carry
        sl = pl.ds(pl.multiple_of(j * bk, bk), bk)
        k, v, kid = _load_kv(plan, k_ref, v_ref, kid_ref, sl)
        s = _dot_nt(q, k) * c
        mask = None
        if masked:
            kpos = j * bk + lax.broadcasted_iota(jnp.int32, (bk,), 0)
            mask = _mask(plan, qpos, kpos, qid, kid, pad_k=True)
        masked = mask is not None  # no mask kind applies: the loop below is empty anyway
        if masked:
            s = jnp.where(mask, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        m_use = jnp.where(m_new == -jnp.inf, 0.0, m_new) if masked else m_new
        alpha = jnp.exp2(m - m_use)
        p = jnp.exp2(s - m_use[:, None])
        den = alpha * den + jnp.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot_nn(p.astype(v.dtype), v)
        return acc, m_new, den

    n_free, n_end = _kv_loop_bounds(plan, i, bq, bk, pad_k=True)
    carry = (
        jnp.zeros(q.shape, jnp.float32),
        jnp.full((bq,), -jnp.inf, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
    )
    carry = _loop(0, n_free, functools.partial(body, masked=False), carry)
    acc, m, den = _loop(n_free, n_end, functools.partial(body, masked=True), carry)
    empty = den == 0.0  # id masks or bottom-right Sq > Sk: no visible key -> zeros, lse2 = -inf
    o_ref[...] = (acc / jnp.where(empty, 1.0, den)[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, -jnp.inf, m + jnp.log2(jnp.where(empty, 1.0, den)))


def _probs_and_ds(plan, q, k, v, do, lse2, delta, mask):
    """p = 2^(s2 - lse2) (masked -> 0) and ds = p * (do v^T - delta), both (bq, bk) float32."""
    p = jnp.exp2(_dot_nt(q, k) * (plan.scale * LOG2E) - lse2[:, None])
    if mask is not None:
        p = jnp.where(mask, p, 0.0)
    ds = p * (_dot_nt(do, v) - delta[:, None])
    return p, ds


def dq_kernel(*refs, plan: Plan):
    """dq = scale * sum_j ds_ij k_j for one (bq, Dp) block of q, looping over key blocks."""
    ins, qid_ref, kid_ref, (dq_ref,) = _split_refs(plan, refs, 6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = ins
    bq, bk = plan.block_q_bwd, plan.block_k_bwd
    i = pl.program_id(0)
    q, do, lse2, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    qid = qid_ref[...] if plan.use_ids else None
    qpos = i * bq + lax.broadcasted_iota(jnp.int32, (bq,), 0)

    def body(j, dq, masked):
        sl = pl.ds(pl.multiple_of(j * bk, bk), bk)
        k, v, kid = _load_kv(plan, k_ref, v_ref, kid_ref, sl)
        kpos = j * bk + lax.broadcasted_iota(jnp.int32, (bk,), 0)
        mask = _mask(plan, qpos, kpos, qid, kid, pad_k=False) if masked else None
        _, ds = _probs_and_ds(plan, q, k, v, do, lse2, delta, mask)
        return dq + _dot_nn(ds.astype(k.dtype), k)

    # Padded keys need no mask here: they are zero, so ds * k adds exact zeros to dq.
    n_free, n_end = _kv_loop_bounds(plan, i, bq, bk, pad_k=False)
    dq = jnp.zeros(q.shape, jnp.float32)
    dq = _loop(0, n_free, functools.partial(body, masked=False), dq)
    dq = _loop(n_free, n_end, functools.partial(body, masked=True), dq)
    dq_ref[...] = (dq * plan.scale).astype(dq_ref.dtype)


def dkv_kernel(*refs, plan: Plan):
    """dv = sum_i p_ij do_i, dk = scale * sum_i ds_ij q_i for one (bk, Dp) block of keys."""
    ins, qid_ref, kid_ref, (dk_ref, dv_ref) = _split_refs(plan, refs, 6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = ins
    bq, bk = plan.block_q_bwd, plan.block_k_bwd
    j = pl.program_id(0)
    k, v, kid = _load_kv(plan, k_ref, v_ref, kid_ref, slice(None))
    kpos = j * bk + lax.broadcasted_iota(jnp.int32, (bk,), 0)

    def body(i, carry, masked):
        dk, dv = carry
        sl = pl.ds(pl.multiple_of(i * bq, bq), bq)
        q, do, lse2, delta = q_ref[sl, :], do_ref[sl, :], lse_ref[sl], delta_ref[sl]
        mask = None
        if masked:
            qid = qid_ref[sl] if plan.use_ids else None
            qpos = i * bq + lax.broadcasted_iota(jnp.int32, (bq,), 0)
            mask = _mask(plan, qpos, kpos, qid, kid, pad_k=False)
        p, ds = _probs_and_ds(plan, q, k, v, do, lse2, delta, mask)
        dv = dv + _dot_tn(p.astype(do.dtype), do)
        dk = dk + _dot_tn(ds.astype(q.dtype), q)
        return dk, dv

    # Query rows past Sq are zero with zero cotangent: they add nothing, so only real blocks run.
    n_real = pl.cdiv(plan.sq, bq)
    if plan.causal:  # q block i meets key block j iff (i+1)*bq - 1 + offset >= j*bk
        lo = jnp.minimum(lax.div(jnp.maximum(j * bk - plan.offset, 0), bq), n_real)
        top = jnp.maximum((j + 1) * bk - 1 - plan.offset, 0)
        mid = jnp.minimum(lax.div(top + bq - 1, bq), n_real)
    else:
        lo, mid = 0, 0
    if plan.use_ids:
        mid = n_real
    carry = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    carry = _loop(lo, mid, functools.partial(body, masked=True), carry)
    dk, dv = _loop(mid, n_real, functools.partial(body, masked=False), carry)
    dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _params(warps, stages):
    """Triton launch parameters; passing them also selects the Triton lowering on GPU."""
    return pl_triton.CompilerParams(num_warps=warps, num_stages=stages)


def _row_spec(block, dp):
    """BlockSpec of (B, S, H, Dp) rows: `block` rows of (b, h) at grid index (i, b, h)."""
    return pl.BlockSpec((None, block, None, dp), lambda i, b, h: (b, i, h, 0))


def _full_spec(seq, dp, groups):
    """BlockSpec of all `seq` rows of (b, h // groups) of a (B, S, Hkv, Dp) array."""
    return pl.BlockSpec((None, seq, None, dp), lambda i, b, h: (b, 0, h // groups, 0))


def _id_specs(plan, q_block, k_block):
    """BlockSpecs of q ids (B, Sq_pad) and kv ids (B, Sk_pad) (None blocks mean whole rows)."""
    qb, kb = q_block or plan.sq_pad, k_block or plan.sk_pad
    q_map = (lambda i, b, h: (b, i)) if q_block else (lambda i, b, h: (b, 0))
    k_map = (lambda i, b, h: (b, i)) if k_block else (lambda i, b, h: (b, 0))
    return [pl.BlockSpec((None, qb), q_map), pl.BlockSpec((None, kb), k_map)]


def forward(plan: Plan, q, k, v, q_ids, kv_ids):
    """Padded q (B,Sq_pad,H,Dp), k/v (B,Sk_pad,Hkv,Dp) -> o like q, lse2 (B,H,Sq_pad) float32."""
    b, _, h, dp = q.shape
    bq = plan.block_q
    in_specs = [_row_spec(bq, dp), _full_spec(plan.sk_pad, dp, plan.groups)]
    in_specs.append(in_specs[-1])
    args = [q, k, v]
    if plan.use_ids:
        in_specs += _id_specs(plan, bq, None)
        args += [q_ids, kv_ids]
    return pl.pallas_call(
        functools.partial(fwd_kernel, plan=plan),
        grid=(plan.sq_pad // bq, b, h),
        in_specs=in_specs,
        out_specs=[
            _row_spec(bq, dp),
            pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((b, h, plan.sq_pad), jnp.float32),
        ],
        compiler_params=_params(plan.num_warps, plan.num_stages),
        interpret=plan.interpret,
        name="dlkit_flash_fwd",
    )(*args)


def backward_dq(plan: Plan, q, k, v, do, lse2, delta, q_ids, kv_ids):
    """dq (B, Sq_pad, H, Dp) in q's dtype; delta = rowsum(o * do) - dlse, (B, H, Sq_pad)."""
    b, _, h, dp = q.shape
    bq = plan.block_q_bwd
    row, full = _row_spec(bq, dp), _full_spec(plan.sk_pad, dp, plan.groups)
    vec = pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))
    in_specs, args = [row, full, full, row, vec, vec], [q, k, v, do, lse2, delta]
    if plan.use_ids:
        in_specs += _id_specs(plan, bq, None)
        args += [q_ids, kv_ids]
    return pl.pallas_call(
        functools.partial(dq_kernel, plan=plan),
        grid=(plan.sq_pad // bq, b, h),
        in_specs=in_specs,
        out_specs=row,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_params(plan.num_warps_bwd, plan.num_stages_bwd),
        interpret=plan.interpret,
        name="dlkit_flash_dq",
    )(*args)


def backward_dkv(plan: Plan, q, k, v, do, lse2, delta, q_ids, kv_ids, out_dtype):
    """Per query head dk, dv (B, Sk_pad, H, Dp) in out_dtype; the caller sums GQA groups."""
    b, _, h, dp = q.shape
    bk = plan.block_k_bwd
    g = plan.groups
    full_q = pl.BlockSpec((None, plan.sq_pad, None, dp), lambda j, b, h: (b, 0, h, 0))
    kv_blk = pl.BlockSpec((None, bk, None, dp), lambda j, b, h: (b, j, h // g, 0))
    vec = pl.BlockSpec((None, None, plan.sq_pad), lambda j, b, h: (b, h, 0))
    in_specs, args = [full_q, kv_blk, kv_blk, full_q, vec, vec], [q, k, v, do, lse2, delta]
    if plan.use_ids:
        ids = _id_specs(plan, None, bk)
        in_specs += ids
        args += [q_ids, kv_ids]
    out_spec = pl.BlockSpec((None, bk, None, dp), lambda j, b, h: (b, j, h, 0))
    shape = jax.ShapeDtypeStruct((b, plan.sk_pad, h, dp), out_dtype)
    return pl.pallas_call(
        functools.partial(dkv_kernel, plan=plan),
        grid=(plan.sk_pad // bk, b, h),
        in_specs=in_specs,
        out_specs=[out_spec, out_spec],
        out_shape=[shape, shape],
        compiler_params=_params(plan.num_warps_bwd, plan.num_stages_bwd),
        interpret=plan.interpret,
        name="dlkit_flash_dkv",
    )(*args)
