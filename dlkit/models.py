"""The model registry: variants are callables (classes or partials) picked by name.

Each family module under dlkit.nn exports `MODELS = {name: factory}`; a factory takes keyword
arguments (always `num_classes`, the output size, which is the vocabulary for language models)
and returns a linen Module called as `model.apply(variables, inputs, train=bool)`.
Add a family by listing its module in `_FAMILY_MODULES`.
"""

import functools
import importlib

from dlkit import errors
from dlkit.errors import ConfigError

__all__ = ["get", "names", "registry"]

_FAMILY_MODULES = (
    "dlkit.nn.mlp",
    "dlkit.nn.charlm",
    "dlkit.nn.word2vec",
    "dlkit.nn.transformer",
    "dlkit.nn.cnn",
    "dlkit.nn.alexnet",
    "dlkit.nn.vgg",
    "dlkit.nn.resnet",
)


@functools.cache
def registry() -> dict:
    """name -> factory, merged from every family module (imported on first use)."""
    merged = {}
    for module in _FAMILY_MODULES:
        for name, factory in importlib.import_module(module).MODELS.items():
            if name in merged:
                raise RuntimeError(f"model name {name!r} registered twice ({module})")
            merged[name] = factory
    return merged


def names() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(registry())


def get(name: str, **kwargs):
    """Builds the model registered as `name` with the given keyword arguments."""
    factory = errors.choose(registry(), name, "model")
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(
            f"model {name!r} does not take these settings {sorted(kwargs)}: {e}"
        ) from e
