"""Recurrent layers: scanned stacks equal a step-by-step loop over the cells; lengths; PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import rtol_for

import dlkit
from dlkit.convert import recurrent_from_torch
from dlkit.nn.recurrent import GRUCell, LSTMCell, Recurrent, SimpleRNNCell

B, T, D, H = 3, 5, 4, 6
CELLS = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}


def inputs(seed=0, batch=B, steps=T):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, steps, D)), jnp.float32)


def layer_params(variables, name):
    return {"params": variables["params"][name]}


def loop_layer(kind, params, x, carry, reverse=False):
    """One layer as a Python loop calling the linen cell once per time step."""
    cell = CELLS[kind](H)
    ys = [None] * x.shape[1]
    order = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    for t in order:
        carry, ys[t] = cell.apply(params, carry, x[:, t])
    return carry, jnp.stack(ys, axis=1)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_stack_equals_step_by_step_loop(kind, bidirectional):
    model = Recurrent(H, num_layers=2, cell=kind, bidirectional=bidirectional)
    x = inputs()
    variables = model.init(jax.random.key(0), x)
    ys, state = model.apply(variables, x)
    zero = CELLS[kind](H).initialize_carry(B)
    h = x
    for i in range(2):
        cf, yf = loop_layer(kind, layer_params(variables, f"layer_{i}"), h, zero)
        if bidirectional:
            cb, yb = loop_layer(kind, layer_params(variables, f"layer_{i}_bwd"), h, zero, True)
            h, want = jnp.concatenate([yf, yb], -1), (cf, cb)
        else:
            h, want = yf, cf
        for a, b in zip(jax.tree.leaves(state[i]), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert ys.shape == (B, T, H * (2 if bidirectional else 1))
    np.testing.assert_allclose(ys, h, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_lengths_give_each_rows_last_real_state(kind):
    lengths = np.array([T, 2, 4])
    model = Recurrent(H, num_layers=2, cell=kind, bidirectional=True)
    x = inputs(1)
    variables = model.init(jax.random.key(1), x)
    ys, state = model.apply(variables, x, lengths=jnp.asarray(lengths))
    mask = np.arange(T)[None] < lengths[:, None]
    np.testing.assert_array_equal(np.asarray(ys)[~mask], 0.0)
    for b, n in enumerate(lengths):  # the row alone, without padding
        ys_b, state_b = jax.jit(model.apply)(variables, x[b : b + 1, :n])
        np.testing.assert_allclose(ys[b, :n], ys_b[0], rtol=2e-5, atol=2e-6)
        for a, c in zip(jax.tree.leaves(state), jax.tree.leaves(state_b), strict=True):
            np.testing.assert_allclose(a[b], c[0], rtol=2e-5, atol=2e-6)
    ys_m, state_m = model.apply(variables, x, mask=jnp.asarray(mask))  # mask == lengths
    np.testing.assert_array_equal(ys_m, ys)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_initial_state_in_final_state_out_continues_the_sequence(kind):
    model = Recurrent(H, num_layers=2, cell=kind)
    x = inputs(2)
    variables = model.init(jax.random.key(2), x)
    ys, state = model.apply(variables, x)
    y1, s1 = model.apply(variables, x[:, :2])
    y2, s2 = model.apply(variables, x[:, 2:], initial_state=s1)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), ys, rtol=2e-5, atol=2e-6)
    for a, b in zip(jax.tree.leaves(s2), jax.tree.leaves(state), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    carry, outs = model.initialize_carry(B), []  # Recurrent.step: one token at a time
    for t in range(T):
        carry, y = model.apply(variables, carry, x[:, t], method="step")
        outs.append(y)
    np.testing.assert_allclose(jnp.stack(outs, 1), ys, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])  # False: the one-scan wavefront
def test_fused_layer_equals_plain_scan_and_its_gradient(bidirectional, cell):
    x = inputs(3)
    fused = Recurrent(H, num_layers=3, cell=cell, bidirectional=bidirectional, unroll=2)
    plain = fused.clone(fused=False)
    variables = fused.init(jax.random.key(3), x)
    plain_vars = plain.init(jax.random.key(3), x)
    assert jax.tree.structure(variables) == jax.tree.structure(plain_vars)
    start = jax.tree.map(lambda a: a + 0.3, fused.initialize_carry(B))

    def loss(model, params):
        ys, state = model.apply({"params": params}, x, initial_state=start)
        return jnp.sum(ys**2) + jnp.sum(jnp.sin(jnp.stack(jax.tree.leaves(state))))

    v1, v2 = (jax.jit(lambda p, m=m: loss(m, p))(variables["params"]) for m in (fused, plain))
    # a sum of B T 2H squares, each through 3 layers of T steps computed in another order
    np.testing.assert_allclose(v1, v2, rtol=rtol_for(np.float32, B * T * 2 * H))
    g1 = jax.jit(jax.grad(lambda p: loss(fused, p)))(variables["params"])
    g2 = jax.jit(jax.grad(lambda p: loss(plain, p)))(variables["params"])
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_lstm_forget_bias_and_parameter_shapes():
    variables = Recurrent(H, cell="lstm").init(jax.random.key(0), inputs())
    p = variables["params"]["layer_0"]
    assert p["input"]["kernel"].shape == (D, 4 * H) and p["w_h"].shape == (H, 4 * H)
    np.testing.assert_array_equal(p["input"]["bias"][H : 2 * H], 1.0)  # forget gate
    np.testing.assert_array_equal(p["input"]["bias"][:H], 0.0)
    w_i = np.asarray(p["w_h"][:, :H])  # each gate block of W_h is orthogonal
    np.testing.assert_allclose(w_i.T @ w_i, np.eye(H), atol=1e-5)


def test_bad_settings_raise_config_errors():
    with pytest.raises(
        dlkit.ConfigError,
        match=r"unknown recurrent cell 'lstn' \(did you mean 'lstm'\?\); choose one of",
    ):
        Recurrent(H, cell="lstn").init(jax.random.key(0), inputs())
    with pytest.raises(ValueError, match=r"expects x \(B, T, D\), got \(3, 4\)"):
        Recurrent(H).init(jax.random.key(0), jnp.zeros((3, 4)))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_matches_pytorch_given_its_weights(kind):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch.manual_seed(0)
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    ref = cls(D, H, num_layers=2, batch_first=True)
    x = np.random.default_rng(4).normal(size=(B, T, D)).astype(np.float32)
    h0 = np.random.default_rng(5).normal(size=(2, B, H)).astype(np.float32) * 0.5
    c0 = np.random.default_rng(6).normal(size=(2, B, H)).astype(np.float32) * 0.5
    with torch.no_grad():
        if kind == "lstm":
            want, (hn, cn) = ref(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
            init = tuple((jnp.asarray(c0[i]), jnp.asarray(h0[i])) for i in range(2))
            params = recurrent_from_torch(ref.state_dict(), "lstm")
        else:
            want, hn = ref(torch.from_numpy(x), torch.from_numpy(h0))
            init = tuple(jnp.asarray(h0[i]) for i in range(2))
            params = recurrent_from_torch(ref.state_dict(), "gru")
    ys, state = Recurrent(H, num_layers=2, cell=kind).apply(
        {"params": params}, jnp.asarray(x), initial_state=init
    )
    np.testing.assert_allclose(ys, want.numpy(), rtol=1e-4, atol=1e-5)
    for i in range(2):
        h_last = state[i][1] if kind == "lstm" else state[i]
        np.testing.assert_allclose(h_last, hn[i].numpy(), rtol=1e-4, atol=1e-5)
        if kind == "lstm":
            np.testing.assert_allclose(state[i][0], cn[i].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("fused", [True, False])
def test_bfloat16_inputs_with_float32_params(cell, fused):
    """Inputs in bf16, params in f32: computed in f32 (the promoted dtype), on every path."""
    model = Recurrent(H, num_layers=2, cell=cell, fused=fused)
    x = inputs(4)
    variables = model.init(jax.random.key(0), x)
    ys, state = model.apply(variables, x.astype(jnp.bfloat16))
    ref, _ = model.apply(variables, x.astype(jnp.bfloat16).astype(jnp.float32))
    assert ys.dtype == jnp.float32
    tol = rtol_for(np.float32, D + H)  # gate pre-activations: dot products of D + H terms
    np.testing.assert_allclose(ys, ref, rtol=tol, atol=tol)
