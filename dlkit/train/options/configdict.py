"""The default ConfigDict, generated from the options' fields (the one place defaults live)."""

import dataclasses

from ml_collections import ConfigDict, config_dict

from dlkit.train.options.migrate import MOVED_KEYS
from dlkit.train.options.parse import as_dict, optional_type
from dlkit.train.options.sections import RunOptions


def _free_form(value) -> bool:
    """model and data: a mapping, or a section with a spread field (its keys beside its name)."""
    if dataclasses.is_dataclass(value):
        return any(f.metadata.get("spread") for f in dataclasses.fields(value))
    return hasattr(value, "to_dict")


def _section_config(cls) -> ConfigDict:
    """A ConfigDict of an options class's defaults; Optional fields as typed placeholders."""
    c, defaults = ConfigDict(), cls()
    for f in dataclasses.fields(cls):
        if not f.compare:
            continue
        value = getattr(defaults, f.name)
        if _free_form(value):
            c[f.name] = ConfigDict(as_dict(value))
        elif dataclasses.is_dataclass(value):
            c[f.name] = _section_config(type(value))
        elif value is None:
            c[f.name] = config_dict.placeholder(optional_type(f))
        else:
            c[f.name] = value
    return c


def defaults() -> ConfigDict:
    """Every typed section with its defaults (the one place they live); model and data hold
    their names only (their other fields belong to the model and the dataset)."""
    return _section_config(RunOptions)


def _field(cls, dotted: str) -> dataclasses.Field:
    """The field of an options class at a dotted key."""
    head, _, rest = dotted.partition(".")
    f = next(f for f in dataclasses.fields(cls) if f.name == head)
    return _field(f.type, rest) if rest else f


def _placeholder(f: dataclasses.Field):
    """An unset placeholder of a field's type; a section's fields as placeholders (dp)."""
    if dataclasses.is_dataclass(f.type):
        return ConfigDict({g.name: _placeholder(g) for g in dataclasses.fields(f.type)})
    return config_dict.placeholder(optional_type(f) or type(f.default))


def add_flat_placeholders(c: ConfigDict) -> ConfigDict:
    """c with every moved top-level key as an unset placeholder (one release), so flags such as
    --config.grad_accum_steps=4 still reach a locked config; migrate() moves what is set."""
    for old, new in MOVED_KEYS.items():
        if "." not in old:
            c[old] = _placeholder(_field(RunOptions, new))
    return c
