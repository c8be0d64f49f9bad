"""Multi-head attention, positional encodings, Transformer LM (KV cache) and classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dlkit
from dlkit.data.tokenizers import build_tokenizer
from dlkit.nn.attention import MultiHeadAttention
from dlkit.nn.positional import apply_rotary, sinusoidal_table
from dlkit.nn.transformer import (
    TransformerClassifier,
    TransformerLM,
    contextual_embeddings,
    probe_sentence,
)

V = 13


def tokens(b, t, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(1, V, (b, t)), jnp.int32)


def lm(**kw):
    kw = dict(num_classes=V, embed_dim=16, num_layers=2, num_heads=4, max_len=16) | kw
    model = TransformerLM(**kw)
    return model, jax.jit(model.init)(jax.random.key(0), tokens(2, 5))


def forward(model, **kw):
    """model.apply jitted: (variables, tokens) -> logits."""
    return jax.jit(lambda variables, x: model.apply(variables, x, **kw))


@pytest.mark.parametrize(
    "kw",
    [
        {"positional": "sinusoidal", "num_kv_heads": 2},
        {"positional": "rope", "num_kv_heads": 1, "tie_embeddings": True},
    ],
    ids=["sinusoidal-gqa", "rope-mqa-tied"],  # learned positions: greedy sampling test
)
def test_kv_cache_decoding_equals_full_forward(kw):
    model, variables = lm(**kw)
    x = tokens(2, 11, seed=1)
    full = forward(model)(variables, x)  # (B, T, V)

    @jax.jit
    def decode(x):
        carry = model.apply(variables, 2, 16, method="init_carry")
        step = lambda c, t: model.apply(variables, c, t, method="step")  # noqa: E731
        carry, logits = jax.lax.scan(step, carry, x.T)
        return carry, jnp.swapaxes(logits, 0, 1)

    carry, stepped = decode(x)
    assert int(carry["index"]) == 11
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), atol=1e-5, rtol=1e-5)


def test_lm_is_causal_and_packs_segments():
    model, variables = lm(positional="rope")
    x = tokens(1, 10, seed=2)
    y = x.at[:, 6:].set((x[:, 6:] + 1) % V)
    a, b = forward(model)(variables, x), forward(model)(variables, y)
    np.testing.assert_allclose(np.asarray(a[:, :6]), np.asarray(b[:, :6]), atol=1e-6)
    assert float(jnp.abs(a[:, 6:] - b[:, 6:]).max()) > 1e-3
    # rotary positions are relative, so the second packed document sees only itself
    seg = jnp.asarray([[0] * 4 + [1] * 6])
    packed = forward(model, segment_ids=seg)(variables, x)
    alone = forward(model)(variables, x[:, 4:])
    np.testing.assert_allclose(np.asarray(packed[:, 4:]), np.asarray(alone), atol=2e-5)


def test_tied_embeddings_drop_the_head():
    def params(**kw):
        model = TransformerLM(num_classes=V, embed_dim=16, num_heads=4, **kw)
        return jax.eval_shape(model.init, jax.random.key(0), tokens(1, 4))["params"]

    untied, tied = params(), params(tie_embeddings=True)
    assert "head" in untied and "head" not in tied
    count = lambda p: sum(x.size for x in jax.tree.leaves(p))  # noqa: E731
    assert count(untied) - count(tied) == 16 * V + V


def test_backends_agree_inside_the_model():
    model, variables = lm(implementation="reference")
    x = tokens(2, 9, seed=3)
    want = forward(model)(variables, x)
    for impl in ("chunked",):  # "xla" is what "auto" picks for the other tests' shapes
        got = forward(lm(implementation=impl)[0])(variables, x)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    with pytest.raises(dlkit.ConfigError, match="choose one of"):
        lm(implementation="fastest")


def test_lm_trains_with_chunked_attention():
    model, variables = lm(implementation="chunked", dropout_rate=0.1)
    x = jnp.tile(jnp.arange(1, 9, dtype=jnp.int32), (4, 1))  # predict the next of 1..8
    tx = optax.adam(1e-2)

    def loss(params, rng):
        logits = model.apply({"params": params}, x[:, :-1], train=True, rngs={"dropout": rng})
        return optax.softmax_cross_entropy_with_integer_labels(logits, x[:, 1:]).mean()

    @jax.jit
    def step(params, opt, rng):
        value, grads = jax.value_and_grad(loss)(params, rng)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    params, opt = variables["params"], tx.init(variables["params"])
    losses = []
    for i in range(20):
        params, opt, value = step(params, opt, jax.random.key(i))
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0], losses


def test_mha_cross_attention_shapes_and_weights():
    mha = MultiHeadAttention(num_heads=4, num_kv_heads=2, out_features=6)
    x, ctx = jnp.ones((2, 3, 8)), jax.random.normal(jax.random.key(1), (2, 7, 8))
    variables = mha.init(jax.random.key(0), x, ctx)
    assert mha.apply(variables, x, ctx).shape == (2, 3, 6)
    assert variables["params"]["key"]["kernel"].shape == (8, 2, 2)
    lengths = jnp.asarray([7, 2])
    out, state = mha.apply(variables, x, ctx, kv_lengths=lengths, mutable=["intermediates"])
    (w,) = state["intermediates"]["attention_weights"]
    assert w.shape == (2, 4, 3, 7)
    np.testing.assert_allclose(np.asarray(w.sum(-1)), 1.0, rtol=1e-5)
    assert float(jnp.abs(w[1, :, :, 2:]).max()) == 0.0
    np.testing.assert_allclose(
        np.asarray(out), np.asarray(mha.apply(variables, x, ctx, kv_lengths=lengths)), atol=1e-6
    )


def test_positional_encodings():
    table = sinusoidal_table(jnp.arange(4), 6)
    np.testing.assert_allclose(np.asarray(table[:, 0]), np.sin(np.arange(4)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(table[:, 1]), np.cos(np.arange(4)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(table[2, 4]), np.sin(2 / 10000 ** (4 / 6)), rtol=1e-5)
    r = jax.random.normal(jax.random.key(0), (2, 1, 1, 8))
    q, k = r[:1], r[1:]
    rot = lambda x, p: apply_rotary(x, jnp.asarray([[p]]))  # noqa: E731
    dots = [float(jnp.sum(rot(q, m) * rot(k, m - 3))) for m in (3, 7, 20)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-4)  # depends on m - n only
    np.testing.assert_allclose(float(jnp.linalg.norm(rot(q, 5))), float(jnp.linalg.norm(q)), 1e-5)
    model, variables = lm()
    with pytest.raises(ValueError, match="max_len"):
        jax.eval_shape(model.apply, variables, tokens(1, 17))


def test_classifier_on_padded_tokens_and_images():
    clf = TransformerClassifier(num_classes=3, vocab_size=V, pad_id=0, embed_dim=16, num_heads=2)
    x = jnp.asarray([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]], jnp.int32)
    variables = jax.jit(clf.init)(jax.random.key(0), x)
    out = jax.jit(clf.apply)(variables, x)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(jax.jit(clf.apply)(variables, x[:, :3])), out, 1e-5)
    img = dlkit.models.get("transformer_classifier", num_classes=10, embed_dim=16, num_heads=2)
    images = jnp.ones((2, 8, 8, 1))  # rows as tokens; trained on digits in test_transformer_train
    shape = jax.eval_shape(lambda x: img.apply(img.init(jax.random.key(0), x), x), images)
    assert shape.shape == (2, 10)
    with pytest.raises(dlkit.ConfigError, match="vocab_size"):
        TransformerClassifier(num_classes=3).init(jax.random.key(0), x)


def test_probe_gives_contextual_vectors():
    model, variables = lm()
    x = jnp.asarray([[5, 6, 7, 8], [9, 6, 7, 8]], jnp.int32)  # same tokens 1..3, different left
    layers = model.apply(variables, x, method="hidden_states")
    assert len(layers) == 3 and all(h.shape == (2, 4, 16) for h in layers)
    final = contextual_embeddings(model, variables, x)
    np.testing.assert_array_equal(np.asarray(final), np.asarray(layers[-1]))
    emb = contextual_embeddings(model, variables, x, layer=0)
    np.testing.assert_allclose(np.asarray(emb[0, 1:]), np.asarray(emb[1, 1:]))  # static
    assert float(jnp.abs(final[0, 1:] - final[1, 1:]).min()) > 1e-4  # contextual
    registered = dlkit.models.get("transformer_lm", num_classes=V, embed_dim=16, num_heads=4)
    assert isinstance(registered, TransformerLM)
    tok = build_tokenizer("the bank, of a river", "char")  # 11 symbols < V
    chars, per_char = probe_sentence(model, variables, tok, "a bank, a river")
    assert len(chars) == 15 and per_char.shape == (15, 16)
    words, per_word = probe_sentence(model, variables, tok, "a bank, a river", pool="last")
    assert words == ["a", "bank", ",", "a", "river"] and per_word.shape == (5, 16)
    np.testing.assert_allclose(per_word[1], per_char[5], rtol=1e-6)  # "k" ends "bank"
    np.testing.assert_allclose(per_word[4], per_char[14], rtol=1e-6)


def test_greedy_sampling_matches_full_forward_argmax():
    from dlkit.nn.sampling import generate

    model, variables = lm(positional="learned", num_kv_heads=2)
    prompt = tokens(2, 3, seed=4)
    got = generate(model, variables, prompt, 6, temperature=0.0)
    seq = jnp.pad(prompt, ((0, 0), (0, 6)))  # causal: position t ignores what is to its right
    logits_of = forward(model)
    for t in range(3, 9):
        seq = seq.at[:, t].set(jnp.argmax(logits_of(variables, seq)[:, t - 1], -1))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(seq[:, 3:]))


def test_mha_kv_cache_uses_cache_implementation_explicitly():
    """implementation='pallas' trains; with a cache the mask-taking cache_implementation decodes,
    and a maskless one there is a one-line ConfigError (never a silent switch)."""
    x = jax.random.normal(jax.random.key(1), (1, 3, 8))
    cache = (jnp.zeros((1, 6, 2, 4)), jnp.zeros((1, 6, 2, 4)), jnp.int32(0))
    ref = MultiHeadAttention(num_heads=2, implementation="reference", cache_implementation="xla")
    variables = ref.init(jax.random.key(0), x)
    want, _ = ref.apply(variables, x, cache=cache)
    got, new = MultiHeadAttention(num_heads=2, implementation="pallas").apply(
        variables, x, cache=cache
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    assert int(new[2]) == 3
    full = MultiHeadAttention(num_heads=2, implementation="pallas").apply(variables, x, causal=True)
    np.testing.assert_allclose(np.asarray(got), np.asarray(full), atol=1e-5)
    for maskless in ("pallas", "cpu"):
        bad = MultiHeadAttention(num_heads=2, cache_implementation=maskless)
        with pytest.raises(dlkit.ConfigError, match=f"cache_implementation '{maskless}' takes no"):
            bad.apply(variables, x, cache=cache)
    with pytest.raises(dlkit.ConfigError, match="unknown attention implementation 'xl'"):
        MultiHeadAttention(num_heads=2, implementation="xl").apply(variables, x)
