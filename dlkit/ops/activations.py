"""Activation functions as pure jnp functions."""

import jax
import jax.numpy as jnp

from dlkit import errors
from dlkit.ops.platform import platform_of


def relu(x: jax.Array) -> jax.Array:
    """relu(x) = max(0, x), elementwise."""
    return jnp.maximum(x, 0)


def sigmoid(x: jax.Array) -> jax.Array:
    """sigmoid(x) = 1 / (1 + exp(-x)), elementwise."""
    return jax.nn.sigmoid(x)


# tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= TANH_CLAMP (Eigen's and XLA:CPU's float32 rational form):
# plain multiply-adds and one divide, which XLA:CPU vectorizes inside any fusion.
TANH_NUM = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
TANH_DEN = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
TANH_CLAMP = 7.90531110763549805  # the approximation is 1.0f here; |tanh| rounds to 1 beyond ~9
TANH_LINEAR = 0.0004  # below this |x|, tanh(x) = x to float32 (x^3 / 3 < eps x / 2)


def _horner(coeffs, x2):
    acc = jnp.asarray(coeffs[-1], x2.dtype)
    for c in coeffs[-2::-1]:
        acc = acc * x2 + c
    return acc


@jax.custom_jvp
def _tanh_rational(x: jax.Array) -> jax.Array:
    c = jnp.clip(x, -TANH_CLAMP, TANH_CLAMP)
    x2 = c * c
    return jnp.where(jnp.abs(x) < TANH_LINEAR, x, c * _horner(TANH_NUM, x2) / _horner(TANH_DEN, x2))


@_tanh_rational.defjvp
def _tanh_rational_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = _tanh_rational(x)
    return y, t * (1 - y) * (1 + y)  # jax's tanh rule: (1 - y^2) without cancellation near |y|=1


def tanh(x: jax.Array) -> jax.Array:
    """tanh(x) = (e^x - e^-x) / (e^x + e^-x), elementwise.

    float32 on CPU uses the rational form above (within 3 ulp of jnp.tanh, the same max relative
    error): XLA:CPU's own tanh stops the vectorization of any fusion it joins (LeNet's conv + tanh:
    8.6 ms vs 1.4 ms). Other dtypes and platforms (`platform_of`) use jnp.tanh."""
    x = jnp.asarray(x)
    fast = x.dtype == jnp.float32 and platform_of(x) == "cpu"
    return _tanh_rational(x) if fast else jnp.tanh(x)


def gelu(x: jax.Array) -> jax.Array:
    """gelu(x) = x * Phi(x) (tanh approximation), elementwise."""
    return jax.nn.gelu(x)


def gelu_exact(x: jax.Array) -> jax.Array:
    """gelu(x) = x * Phi(x) with the erf form (PyTorch's nn.GELU() default), elementwise."""
    return jax.nn.gelu(x, approximate=False)


def identity(x: jax.Array) -> jax.Array:
    """identity(x) = x."""
    return x


ACTIVATIONS = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "gelu": gelu,
    "gelu_exact": gelu_exact,
    "identity": identity,
}


def get_activation(name: str):
    """Looks an activation up by name; unknown names list the choices."""
    return errors.choose(ACTIVATIONS, name, "activation")
