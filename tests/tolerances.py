"""Float tolerances that follow the dtype and the reduction size, so tests hold on any x86 CPU.

Two programs that compute the same sum of n terms in different orders (a fused kernel and a plain
scan, another CPU's SIMD width or thread split, a sharded reduction) differ by up to ~n u relative
to the sum of magnitudes (recursive summation's bound; u = eps / 2 is the unit roundoff), and each
side contributes, so n * eps bounds both. `n` is the longest chain of float operations feeding a
compared value (the summed terms, times the recurrent steps for a scan), not a fudge factor.
Bitwise equality is kept for the same program on the same machine (resume, reruns).

    np.testing.assert_allclose(got, want, rtol=rtol_for(np.float32, n=B * T * H))
"""

import numpy as np

MIN_ULPS = 8  # a handful of roundings in any elementwise op chain (exp, log, division)


def eps(dtype=np.float32) -> float:
    """Machine epsilon of a float dtype (float32: 1.19e-7, float64: 2.2e-16, bfloat16: 7.8e-3)."""
    import jax.numpy as jnp

    return float(jnp.finfo(dtype).eps)


def rtol_for(dtype=np.float32, n: int = 1) -> float:
    """Relative tolerance for values that are sums of n terms computed in another order."""
    return eps(dtype) * max(int(n), MIN_ULPS)


def atol_for(dtype=np.float32, n: int = 1, scale: float = 1.0) -> float:
    """Absolute tolerance for such values near zero, whose terms have magnitude ~scale."""
    return rtol_for(dtype, n) * scale


def assert_trees_close(got, want, n: int, dtype=np.float32) -> None:
    """Every leaf of `got` equals `want`'s within rtol_for(dtype, n), and within that relative to
    the largest |want| of the leaf near zero; an all-zero `want` leaf fails (nothing compared)."""
    import jax

    for a, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, r = np.asarray(a), np.asarray(r)
        assert a.shape == r.shape, (a.shape, r.shape)
        scale = float(np.abs(r).max())
        assert scale > 0, "all zeros: the comparison cannot fail"
        tol = rtol_for(dtype, n)
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol * scale)
