"""Word2vec math: negative-sampling losses and their gradients, the module, cosine look-ups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlkit import models
from dlkit.ops import word2vec as w2v
from dlkit.train import objectives


def _tables(v=7, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(v, d)), jnp.float32) for _ in range(2))


def _log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def test_negative_sampling_loss_matches_formula():
    scores = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    want = [
        -_log_sigmoid(2.0) - _log_sigmoid(1.0) - _log_sigmoid(-0.5),
        3 * np.log(2.0),
    ]
    np.testing.assert_allclose(w2v.negative_sampling_loss(jnp.asarray(scores)), want, rtol=1e-6)
    big = jnp.array([[1e4, -1e4]])  # stable: log_sigmoid, no overflow
    assert float(w2v.negative_sampling_loss(big)[0]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        w2v.negative_sampling_loss(jnp.zeros((3, 1)))


def test_sgns_scores_are_dot_products():
    w_in, w_out = _tables()
    c, o, n = jnp.array([0, 3]), jnp.array([1, 6]), jnp.array([[2, 5, 4], [0, 0, 1]])
    got = np.asarray(w2v.sgns_scores(w_in, w_out, c, o, n))
    a, b = np.asarray(w_in), np.asarray(w_out)
    for i in range(2):
        want = [a[c[i]] @ b[o[i]]] + [a[c[i]] @ b[k] for k in n[i]]
        np.testing.assert_allclose(got[i], want, rtol=1e-5)
    with pytest.raises(ValueError, match="batch sizes differ"):
        w2v.sgns_scores(w_in, w_out, c, o[:1], n)


def test_sgns_gradient_matches_closed_form():
    """d loss / d v_c = (s(z_o) - 1) u_o + sum_k s(z_k) u_k."""
    w_in, w_out = _tables(seed=1)
    c, o, n = jnp.array([2]), jnp.array([4]), jnp.array([[1, 6]])

    def loss(w):
        return w2v.negative_sampling_loss(w2v.sgns_scores(w, w_out, c, o, n)).sum()

    grad = np.asarray(jax.grad(loss)(w_in))
    u, v = np.asarray(w_out), np.asarray(w_in)[2]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    want = (sig(u[4] @ v) - 1) * u[4] + sig(u[1] @ v) * u[1] + sig(u[6] @ v) * u[6]
    np.testing.assert_allclose(grad[2], want, rtol=1e-4, atol=1e-6)
    assert np.all(np.delete(grad, 2, axis=0) == 0)  # only the center's row moves


def test_cbow_scores_average_real_contexts_only():
    w_in, w_out = _tables(seed=2)
    ctx = jnp.array([[1, 2, -1, -1], [-1, -1, -1, -1]])
    t, n = jnp.array([3, 4]), jnp.array([[5], [6]])
    got = np.asarray(w2v.cbow_scores(w_in, w_out, ctx, t, n))
    a, b = np.asarray(w_in), np.asarray(w_out)
    h = (a[1] + a[2]) / 2
    np.testing.assert_allclose(got[0], [h @ b[3], h @ b[5]], rtol=1e-5)
    np.testing.assert_allclose(got[1], [0.0, 0.0])  # no context: h = 0
    with pytest.raises(ValueError, match=r"contexts \(4,\)"):
        w2v.cbow_scores(w_in, w_out, ctx[0], t, n)


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_registry_module_scores_packed_rows(mode):
    model = models.get(mode, num_classes=9, features=5, context_size=2)
    rows = jnp.array([[1, 2, 3, 4, 5], [6, 7, 8, 0, 1]], jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), rows)
    p = variables["params"]
    w_in, w_out = p["input_embedding"], jax.random.normal(jax.random.PRNGKey(1), (9, 5))
    variables = {"params": {"input_embedding": w_in, "output_embedding": w_out}}
    got = model.apply(variables, rows, train=True)
    if mode == "skipgram":
        want = w2v.sgns_scores(w_in, w_out, rows[:, 0], rows[:, 1], rows[:, 2:])
    else:
        want = w2v.cbow_scores(w_in, w_out, rows[:, :2], rows[:, 2], rows[:, 3:])
    assert got.shape == (2, 4 if mode == "skipgram" else 3)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert float(jnp.abs(w_in).max()) <= 0.5 / 5  # U(-0.5/D, 0.5/D)
    assert not np.any(p["output_embedding"])  # output table starts at zero
    with pytest.raises(ValueError, match=r"inputs \(2, 2\)"):
        model.apply(variables, rows[:, :2])


def test_negative_sampling_objective_masks_rows():
    scores = jnp.array([[3.0, -2.0, 4.0], [1.0, 0.0, -1.0], [9.0, 9.0, 9.0]])
    batch = {"mask": jnp.array([1.0, 1.0, 0.0])}
    loss, sums = objectives.get("negative_sampling")(scores, batch)
    per = np.asarray(w2v.negative_sampling_loss(scores))
    assert float(loss) == pytest.approx(per[:2].mean(), rel=1e-6)
    assert float(sums["count"]) == 2 and float(sums["accuracy"]) == 1  # row 0 loses to a negative


def test_cosine_and_nearest_neighbours():
    a, b = np.array([1.0, 0.0]), np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(w2v.cosine_similarity(a, b), [1, 0, -1, 2**-0.5], atol=1e-7)
    ids, sims = w2v.nearest_neighbours(b, a, k=2)
    assert ids.tolist() == [0, 3] and sims[0] == pytest.approx(1.0)
    ids, _ = w2v.nearest_neighbours(b, a, k=10, exclude=[0])
    assert ids.tolist() == [3, 1, 2]
    with pytest.raises(ValueError, match=r"table \(4, 2\)"):
        w2v.nearest_neighbours(b, np.zeros(3))


def test_analogy_finds_the_fourth_word():
    # man, woman, king, queen, apple: king - man + woman is closest to queen
    table = np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0.2, 1]], np.float32
    )
    ids, sims = w2v.analogy(table, 2, 0, 1, k=2)
    assert ids[0] == 3 and sims[0] > sims[1]
    assert not {0, 1, 2} & set(ids.tolist())
