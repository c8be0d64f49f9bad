"""dlkit: a JAX functional research toolkit.

`import dlkit` loads jax, flax and optax only; TFDS, Grain, TensorFlow and matplotlib load when the
data layer or a plot is first used.
"""

from dlkit import kernels, models, nn, ops  # kernels: plugs the Pallas backend into ops
from dlkit.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "kernels", "models", "nn", "ops", "__version__"]
