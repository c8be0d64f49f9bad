"""Character language models and compiled sampling: step == teacher forcing, greedy, top-k."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dlkit
from dlkit.nn import sampling
from dlkit.ops.losses import cross_entropy

V, B, T = 11, 2, 7


def lm(name="char_lstm", **kw):
    model = dlkit.models.get(name, num_classes=V, hidden_size=16, num_layers=2, embed_dim=8, **kw)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (B, T)), jnp.int32)
    return model, model.init(jax.random.key(0), tokens), tokens


@pytest.mark.parametrize("name", ["char_rnn", "char_lstm", "char_gru"])
def test_step_by_step_equals_teacher_forcing(name):
    model, variables, tokens = lm(name)
    logits = model.apply(variables, tokens)
    assert logits.shape == (B, T, V)
    carry = model.apply(variables, B, T, method="init_carry")
    for t in range(T):
        carry, step_logits = model.apply(variables, carry, tokens[:, t], method="step")
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)


def test_greedy_generation_matches_full_forward_argmax():
    model, variables, prompt = lm("char_gru")
    prompt = prompt[:, :3]
    got = sampling.generate(model, variables, prompt, 6, temperature=0.0)
    seq = prompt
    for _ in range(6):
        nxt = jnp.argmax(model.apply(variables, seq)[:, -1], -1).astype(jnp.int32)
        seq = jnp.concatenate([seq, nxt[:, None]], 1)
    np.testing.assert_array_equal(got, seq[:, 3:])
    np.testing.assert_array_equal(sampling.generate(model, variables, prompt, 6, top_k=1), got)


def test_sampling_is_seeded_and_top_k_restricts_the_choices():
    model, variables, prompt = lm("char_lstm")
    a = sampling.generate(model, variables, prompt, 40, seed=1, temperature=2.0, top_k=3)
    b = sampling.generate(model, variables, prompt, 40, seed=1, temperature=2.0, top_k=3)
    c = sampling.generate(model, variables, prompt, 40, seed=2, temperature=2.0, top_k=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    full = jnp.concatenate([prompt, a], 1)  # rank of each drawn token under the model
    logits = model.apply(variables, full)[:, T - 1 : -1]
    rank = jnp.sum(logits > jnp.take_along_axis(logits, a[..., None], -1), -1)
    assert int(rank.max()) < 3
    assert int(rank.max()) > 0  # at temperature 2 not every draw is the argmax


def test_filter_logits():
    z = jnp.array([[1.0, 3.0, 2.0, 0.0]])
    np.testing.assert_allclose(sampling.filter_logits(z, 2.0), z / 2)
    got = sampling.filter_logits(z, 1.0, top_k=2)
    np.testing.assert_array_equal(got, [[-np.inf, 3.0, 2.0, -np.inf]])
    with pytest.raises(ValueError, match=r"top_k must be in \[0, 4\]"):
        sampling.filter_logits(z, 1.0, top_k=5)


def test_generation_compiles_to_one_program_whose_size_does_not_grow_with_length():
    model, variables, prompt = lm("char_lstm")
    key, temp = jax.random.key(0), jnp.float32(1.0)

    def program(n):
        return str(
            jax.make_jaxpr(sampling._generate, static_argnums=(0, 5, 6))(
                model, variables, prompt, key, temp, n, 0
            )
        )

    short, long = program(5), program(500)
    assert "scan" in short
    assert long.count("\n") == short.count("\n")  # a loop, not one step per character


def test_bad_prompts_are_rejected():
    model, variables, _ = lm()
    with pytest.raises(ValueError, match=r"prompt must be \(B, P\) token ids with P >= 1"):
        sampling.generate(model, variables, jnp.zeros((1, 0), jnp.int32), 3)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sampling.generate(model, variables, jnp.zeros((1, 2), jnp.int32), 3, temperature=-1.0)


def test_lstm_learns_a_periodic_text_and_writes_it_back():
    text = np.array([0, 1, 2, 3, 4] * 40, np.int32)
    model = dlkit.models.get("char_lstm", num_classes=5, hidden_size=16, num_layers=1, embed_dim=8)
    windows = np.stack([text[i : i + 17] for i in range(0, 150, 3)])  # (50, 17)
    params = model.init(jax.random.key(1), windows[:, :-1])["params"]
    tx = optax.adam(3e-2)

    @jax.jit
    def step(params, opt):
        loss, g = jax.value_and_grad(
            lambda p: cross_entropy(model.apply({"params": p}, windows[:, :-1]), windows[:, 1:])
        )(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    opt = tx.init(params)
    for _ in range(60):
        params, opt, loss = step(params, opt)
    assert float(loss) < 0.05
    out = sampling.generate(model, {"params": params}, jnp.array([[2, 3]]), 12, temperature=0.0)
    np.testing.assert_array_equal(out[0], [4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0])
