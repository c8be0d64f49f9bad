"""The tolerance helper matches float32 summation: reordered sums differ within rtol_for, and
the bound is not loose (a 1-term value gets a few ulps, not 1e-5)."""

import numpy as np
from tolerances import eps, rtol_for


def test_reordered_float32_sums_stay_within_rtol_for():
    rng = np.random.default_rng(0)
    for n in (10, 1000, 100_000):
        x = rng.normal(size=n).astype(np.float32) ** 2  # positive terms: relative error is defined
        forward = np.float32(0)
        for v in x[: min(n, 10_000)]:
            forward += v  # strictly sequential float32
        pairwise = x[: min(n, 10_000)].sum(dtype=np.float32)  # numpy's pairwise order
        assert abs(forward - pairwise) <= rtol_for(np.float32, n) * abs(pairwise)


def test_rtol_for_scales_with_dtype_and_size():
    assert rtol_for(np.float32) == 8 * eps(np.float32) < 1e-6
    assert rtol_for(np.float32, 1000) == 1000 * eps(np.float32)
    assert rtol_for(np.float64, 1000) < 1e-12
