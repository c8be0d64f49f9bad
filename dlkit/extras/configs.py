"""Experiment configs by file path: experiments/configs/<name>.py holds `get_config()`.

Configs are loaded by path (ml_collections' --config=path.py), not as a package, so a variant
derives from a sibling with `sibling(__file__, "base_name")` and overrides only what differs.
"""

import importlib.util
import pathlib

from dlkit.errors import ConfigError


def load_module(path):
    """The Python module at `path` (a config file), executed fresh."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file {path}; choose one of the files in {path.parent}")
    spec = importlib.util.spec_from_file_location(f"dlkit_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(path, *args):
    """get_config(*args) of the config file at `path`."""
    return load_module(path).get_config(*args)


def sibling(file, name: str, *args):
    """get_config(*args) of <name>.py in the folder of `file` (a config's __file__)."""
    return get_config(pathlib.Path(file).with_name(f"{name}.py"), *args)
