"""dlkit.convert.torch_twins.twin: the benchmarks' PyTorch peer of each shipped config's model has
exactly its parameter count (same layers, widths, heads, tying) and runs on its input."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

from dlkit.convert.torch_twins import twin  # noqa: E402
from dlkit.extras.configs import get_config  # noqa: E402
from dlkit.train.build import build_model  # noqa: E402

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "configs"
# config: (one example's shape, classes, int tokens?)
CASES = {
    "mlp_mnist": ((28, 28, 1), 10, False),
    "mlp_digits": ((64,), 10, False),
    "cnn_mnist": ((28, 28, 1), 10, False),
    "lenet_mnist": ((28, 28, 1), 10, False),
    "resnet18_cifar10": ((32, 32, 3), 10, False),
    "vgg16_cifar10": ((32, 32, 3), 10, False),
    "char_lstm_shakespeare": ((16,), 65, True),
    "char_gru_shakespeare": ((16,), 65, True),
    "transformer_lm_shakespeare": ((16,), 65, True),
}
# PyTorch's recurrent cells keep two biases per gate (b_ih + b_hh), dlkit one (GRU: two for its
# candidate gate): this many more per layer, x hidden_size, in the twin.
EXTRA_BIASES = {"char_lstm": 4, "char_gru": 2}


@pytest.mark.parametrize("name", CASES)
def test_twin_has_the_models_parameter_count(name):
    config = get_config(CONFIGS / f"{name}.py")
    shape, classes, tokens = CASES[name]
    x = jnp.zeros((2, *shape), jnp.int32 if tokens else jnp.float32)
    variables = jax.eval_shape(build_model(config, num_classes=classes).init, jax.random.key(0), x)
    expected = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    m = config.model
    expected += EXTRA_BIASES.get(m.name, 0) * m.get("num_layers", 0) * m.get("hidden_size", 0)
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    net = twin(config.model.name, classes, shape, **kwargs)
    assert sum(p.numel() for p in net.parameters()) == expected
    xt = torch.zeros((2, *shape), dtype=torch.long) if tokens else torch.zeros((2, *shape))
    out = net.eval()(xt if tokens or len(shape) < 3 else xt.permute(0, 3, 1, 2))
    assert out.shape == (2, *shape[:1], classes) if tokens else (2, classes)
