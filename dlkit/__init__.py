"""dlkit: a JAX functional research toolkit.

`import dlkit` loads jax, flax and optax only; TFDS, Grain, TensorFlow and matplotlib load when the
data layer or a plot is first used, torch only when a .pth file is read (dlkit.convert).
"""

from dlkit import convert, kernels, models, nn, ops  # kernels: plugs the Pallas backend into ops
from dlkit.errors import ConfigError, RunError

__version__ = "0.1.0"
# `dlkit.data` and `dlkit.train` are imported on demand (from dlkit import data, train).
__all__ = ["ops", "nn", "models", "convert", "kernels", "ConfigError", "RunError", "__version__"]
