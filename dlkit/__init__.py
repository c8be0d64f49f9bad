"""dlkit: a JAX functional research toolkit.

`import dlkit` loads jax, flax and optax only; TFDS, Grain, TensorFlow and matplotlib load when the
data layer or a plot is first used.
"""

from dlkit import models, nn, ops
from dlkit.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "models", "nn", "ops", "__version__"]
