"""Integer and per-side padding in ops.max_pool / ops.avg_pool and nn.cnn.MaxPool / AvgPool."""

import numpy as np
import pytest

from dlkit import ops
from dlkit.nn.cnn import AvgPool, MaxPool


def images(h=7, w=7):
    return np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)


def brute_max(x, k, s, p):
    """Max over each window of the -inf padded map, as PyTorch's MaxPool2d(k, s, p)."""
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
    ho, wo = (x.shape[1] + 2 * p - k) // s + 1, (x.shape[2] + 2 * p - k) // s + 1
    out = np.empty((x.shape[0], ho, wo, x.shape[3]), x.dtype)
    for i in range(ho):
        for j in range(wo):
            out[:, i, j] = xp[:, i * s : i * s + k, j * s : j * s + k].max(axis=(1, 2))
    return out


def brute_avg(x, k, s, p):
    """Mean over the real (unpadded) cells of each window (count_include_pad=False)."""
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ones = np.pad(np.ones(x.shape[1:3]), p)
    ho, wo = (x.shape[1] + 2 * p - k) // s + 1, (x.shape[2] + 2 * p - k) // s + 1
    out = np.empty((x.shape[0], ho, wo, x.shape[3]), x.dtype)
    for i in range(ho):
        for j in range(wo):
            win = (slice(i * s, i * s + k), slice(j * s, j * s + k))
            out[:, i, j] = xp[:, win[0], win[1]].sum(axis=(1, 2)) / ones[win].sum()
    return out


@pytest.mark.parametrize("h", [7, 8])
def test_int_padding_matches_the_padded_window_definition(h):
    x = images(h, h)
    want = brute_max(x, 3, 2, 1)
    np.testing.assert_array_equal(ops.max_pool(x, 3, 2, 1), want)
    assert want.shape[1] == ops.pool_output_size(h, 3, 2, 1)
    np.testing.assert_allclose(ops.avg_pool(x, 3, 2, 1), brute_avg(x, 3, 2, 1), rtol=1e-6)


def test_modules_accept_int_padding():
    x = images()
    np.testing.assert_array_equal(
        MaxPool((3, 3), (2, 2), padding=1).apply({}, x), brute_max(x, 3, 2, 1)
    )
    np.testing.assert_array_equal(
        MaxPool((3, 3), (2, 2), padding=1, impl="reference").apply({}, x), brute_max(x, 3, 2, 1)
    )
    np.testing.assert_allclose(
        AvgPool((3, 3), (2, 2), padding=1).apply({}, x), brute_avg(x, 3, 2, 1), rtol=1e-6
    )


def test_per_axis_padding_and_bad_padding():
    x = images()
    assert ops.max_pool(x, 3, 2, (1, 0)).shape == (2, 4, 3, 3)
    assert ops.max_pool(x, 3, 2, ((1, 1), (0, 0))).shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match="must be an int"):
        ops.max_pool(x, 3, 2, (1, 1, 1))
