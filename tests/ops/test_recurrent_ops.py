"""Recurrent step functions against the written-out formulas, and the scan against a Python loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dlkit.ops import recurrent as r

B, T, D, H = 3, 6, 4, 5


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def weights(kind, seed=0, dtype=np.float64):
    g = r.NUM_GATES[kind]
    rng = np.random.default_rng(seed)
    w = {
        "w_x": rng.normal(size=(D, g * H)) * 0.5,
        "b": rng.normal(size=(g * H,)) * 0.1,
        "w_h": rng.normal(size=(H, g * H)) * 0.5,
        "b_hn": rng.normal(size=(H,)) * 0.1,
        "x": rng.normal(size=(B, T, D)),
        "h0": rng.normal(size=(B, H)) * 0.5,
        "c0": rng.normal(size=(B, H)) * 0.5,
    }
    return {k: v.astype(dtype) for k, v in w.items()}


def bound_step(kind, w):
    if kind == "rnn":
        return functools.partial(r.rnn_step, w_h=w["w_h"])
    if kind == "lstm":
        return functools.partial(r.lstm_step, w_h=w["w_h"])
    return functools.partial(r.gru_step, w_h=w["w_h"], b_hn=w["b_hn"])


def init_carry(kind, w):
    return (w["c0"], w["h0"]) if kind == "lstm" else w["h0"]


def numpy_step(kind, w, carry, x):
    """The notes' equations, one gate matrix at a time (PyTorch gate order)."""
    wx, wh, b = w["w_x"], w["w_h"], w["b"]

    def gate(k):  # pre-activation of gate k from its own column block
        s = slice(k * H, (k + 1) * H)
        return x @ wx[:, s] + b[s], wh[:, s]

    if kind == "rnn":
        xa, ha = gate(0)
        h = np.tanh(xa + carry @ ha)
        return h, h
    if kind == "lstm":
        c, h = carry
        pre = [xa + h @ ha for xa, ha in map(gate, range(4))]
        i, f, g, o = sig(pre[0]), sig(pre[1]), np.tanh(pre[2]), sig(pre[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        return (c, h), h
    h = carry
    (xr, hr), (xz, hz), (xn, hn) = gate(0), gate(1), gate(2)
    rr, z = sig(xr + h @ hr), sig(xz + h @ hz)
    n = np.tanh(xn + rr * (h @ hn + w["b_hn"]))
    h = (1 - z) * n + z * h
    return h, h


def loop_reference(kind, w, mask=None, reverse=False):
    """Python loop over time; masked steps keep the carry and output zeros."""
    carry, ys = init_carry(kind, w), np.zeros((B, T, H))
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        new, y = numpy_step(kind, w, carry, w["x"][:, t])
        m = np.ones((B, 1), bool) if mask is None else mask[:, t, None]
        carry = jax.tree.map(lambda n, o, m=m: np.where(m, n, o), new, carry)
        ys[:, t] = np.where(m, y, 0.0)
    return carry, ys


def run_scan(kind, w, **kw):
    xw = jnp.asarray(w["x"] @ w["w_x"] + w["b"])
    return r.scan_steps(bound_step(kind, w), init_carry(kind, w), xw, **kw)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_step_matches_formula(kind):
    with jax.enable_x64(True):
        w = weights(kind)
        xw = w["x"][:, 0] @ w["w_x"] + w["b"]
        got_c, got_h = bound_step(kind, w)(init_carry(kind, w), jnp.asarray(xw))
        want_c, want_h = numpy_step(kind, w, init_carry(kind, w), w["x"][:, 0])
        np.testing.assert_allclose(got_h, want_h, rtol=1e-12)
        for a, b in zip(jax.tree.leaves(got_c), jax.tree.leaves(want_c), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_scan_matches_python_loop(kind, reverse):
    with jax.enable_x64(True):
        w = weights(kind, seed=1)
        carry, ys = run_scan(kind, w, reverse=reverse, unroll=2)
        want_carry, want_ys = loop_reference(kind, w, reverse=reverse)
        np.testing.assert_allclose(ys, want_ys, rtol=1e-10, atol=1e-12)
        for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_masked_scan_final_state_is_last_real_token(kind):
    lengths = np.array([T, 2, 4])
    mask = np.arange(T)[None] < lengths[:, None]
    with jax.enable_x64(True):
        w = weights(kind, seed=2)
        carry, ys = run_scan(kind, w, mask=jnp.asarray(mask))
        np.testing.assert_array_equal(np.asarray(ys)[~mask], 0.0)  # padded outputs are zero
        for b, n in enumerate(lengths):  # each row alone, truncated to its length, no mask
            short = {**w, "x": w["x"][b : b + 1, :n], "h0": w["h0"][b : b + 1]}
            short["c0"] = w["c0"][b : b + 1]
            want_carry, want_ys = run_scan(kind, short)
            np.testing.assert_allclose(ys[b, :n], want_ys[0], rtol=1e-10)
            for a, c in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry), strict=True):
                np.testing.assert_allclose(a[b], c[0], rtol=1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_reverse_masked_scan_starts_at_each_rows_last_token(kind):
    lengths = np.array([3, T, 1])
    mask = np.arange(T)[None] < lengths[:, None]
    with jax.enable_x64(True):
        w = weights(kind, seed=3)
        carry, ys = run_scan(kind, w, mask=jnp.asarray(mask), reverse=True)
        want_carry, want_ys = loop_reference(kind, w, mask=mask, reverse=True)
        np.testing.assert_allclose(ys, want_ys, rtol=1e-10, atol=1e-12)
        for a, c in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry), strict=True):
            np.testing.assert_allclose(a, c, rtol=1e-10)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_scan_gradients_pass_check_grads(kind):
    with jax.enable_x64(True):
        w = weights(kind, seed=4)
        mask = jnp.asarray(np.arange(T)[None] < np.array([T, 3, 5])[:, None])

        def f(xw, w_h, h0):
            step = bound_step(kind, {**w, "w_h": w_h})
            carry = (jnp.asarray(w["c0"]), h0) if kind == "lstm" else h0
            carry, ys = r.scan_steps(step, carry, xw, mask=mask)
            return jnp.sum(ys**2) + jnp.sum(jax.tree.leaves(carry)[-1])

        xw = jnp.asarray(w["x"] @ w["w_x"] + w["b"])
        check_grads(f, (xw, jnp.asarray(w["w_h"]), jnp.asarray(w["h0"])), order=1, modes=["rev"])


def test_shape_errors_name_the_shapes():
    h = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"lstm_step: expected .* got h \(2, 3\), xw \(2, 10\)"):
        r.lstm_step((h, h), jnp.zeros((2, 10)), jnp.zeros((3, 12)))
    with pytest.raises(ValueError, match=r"mask \(2, 4\) must be \(B, T\) = \(2, 5\)"):
        r.scan_steps(
            functools.partial(r.rnn_step, w_h=jnp.zeros((3, 3))),
            h,
            jnp.zeros((2, 5, 3)),
            mask=jnp.ones((2, 4), bool),
        )
    with pytest.raises(ValueError, match=r"xw must be \(B, T, G\*H\), got \(5, 3\)"):
        r.scan_steps(functools.partial(r.rnn_step, w_h=jnp.zeros((3, 3))), h, jnp.zeros((5, 3)))


def test_lengths_to_mask():
    np.testing.assert_array_equal(
        r.lengths_to_mask(jnp.array([0, 2, 3]), 3),
        [[False, False, False], [True, True, False], [True, True, True]],
    )
