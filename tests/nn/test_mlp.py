import jax
import jax.numpy as jnp
import pytest

from dlkit import models
from dlkit.errors import ConfigError


def test_mlp_default_is_the_notes_network():
    model = models.get("mlp", num_classes=10)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((2, 28, 28, 1)))["params"]
    shapes = [params[n]["kernel"].shape for n in ("hidden_0", "hidden_1", "head")]
    assert shapes == [(784, 128), (128, 64), (64, 10)]
    assert model.apply({"params": params}, jnp.ones((2, 28, 28, 1))).shape == (2, 10)


def test_linear_classifier_is_softmax_regression():
    model = models.get("linear", num_classes=3)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 4)))["params"]
    assert list(params) == ["head"] and params["head"]["kernel"].shape == (4, 3)


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match="unknown model 'nope'; choose one of: .*mlp"):
        models.get("nope")


def test_unknown_activation_lists_choices():
    model = models.get("mlp", activation="swishy")
    with pytest.raises(ConfigError, match="unknown activation 'swishy'"):
        model.init(jax.random.PRNGKey(0), jnp.ones((1, 4)))
