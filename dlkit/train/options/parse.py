"""One parser for every options section: a frozen dataclass whose fields' metadata say the checks.

    field metadata   meaning
    minimum, above   numeric bound (value >= minimum, value > above)
    choices          a mapping or sequence of allowed names, or a callable returning one (read at
                     parse time); `label` names them in the message (default: the dotted key)
    parse            hook(value, dotted key) -> the field's value, instead of the type check
    resumable        True: a rerun may change it (dlkit.train.options.diff.resumable_keys);
                     a tuple: the keys of a free-form mapping field (data) that a rerun may change
    spread           a mapping field whose keys sit beside the others in the config (model kwargs)

`parse_section(cls, mapping, where)` checks the keys (unknown key: did-you-mean), fills each
default from its field, checks types, bounds and choices, recurses into nested sections, then
calls the section's `check()`. A None value is an unset placeholder: the field's default.
"""

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import ClassVar

from ml_collections import FrozenConfigDict

from dlkit.errors import ConfigError, choose


def option(default=dataclasses.MISSING, **metadata) -> dataclasses.Field:
    """A dataclass field with its default and its checks (see the module docstring)."""
    return dataclasses.field(default=default, metadata=metadata)


def is_section(value) -> bool:
    """A mapping, ConfigDict or FrozenConfigDict (the latter two are not Mappings)."""
    return isinstance(value, Mapping) or hasattr(value, "to_dict")


def plain(config) -> dict:
    """A ConfigDict, FrozenConfigDict or mapping as nested plain dicts (a fresh copy)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return {k: plain(v) if is_section(v) else v for k, v in dict(config).items()}


def frozen(value):
    """Nested dicts/lists -> FrozenConfigDict/tuples, so equal configs compare equal."""
    if is_section(value):
        return FrozenConfigDict({k: frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    return value


def section(value, key: str) -> dict:
    """The mapping at dotted `key` as a plain dict ({} when unset); ConfigError if not one."""
    if value is None:
        return {}
    if not is_section(value):
        raise ConfigError(f"config {key} must be a section (a ConfigDict), got {value!r}")
    return plain(value)


def check_keys(mapping, known, where: str) -> None:
    """ConfigError for the first key of mapping not in known (with a did-you-mean)."""
    for key in mapping:
        if key not in known:
            hint = difflib.get_close_matches(str(key), list(known), n=1)
            did = f" (did you mean {where}{hint[0]}?)" if hint else ""
            raise ConfigError(
                f"unknown config key {where}{key}{did}; the keys there are: {', '.join(known)}"
            )


def bound_error(key: str, value, minimum=None, above=None) -> ConfigError:
    """'config key must be a number >= minimum (or > above), got value; set --config.key'."""
    bound = f" >= {minimum}" if minimum is not None else f" > {above}" if above is not None else ""
    return ConfigError(f"config {key} must be a number{bound}, got {value!r}; set --config.{key}")


def _int(value, key, minimum=None, **_):
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
    ):
        at_least = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(
            f"config {key} must be an integer{at_least}, got {value!r}; set --config.{key}"
        )
    return value


def _float(value, key, minimum=None, above=None, **_):
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and above is not None:
        ok = value > above
    if not ok:
        raise bound_error(key, value, minimum, above)
    return float(value)


def _bool(value, key, **_):
    if value not in (True, False):
        raise ConfigError(f"config {key} must be True or False, got {value!r}")
    return bool(value)


def _str(value, key, **_):
    if not isinstance(value, str):
        raise ConfigError(f"config {key} must be a string, got {value!r}")
    return value


CHECKS = {int: _int, float: _float, bool: _bool, str: _str}


def _base_type(annotation):
    """`int | None` -> int; other annotations unchanged."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [t for t in typing.get_args(annotation) if t is not type(None)]
        return kinds[0] if len(kinds) == 1 else annotation
    return annotation


def optional_type(f: dataclasses.Field):
    """The type of an Optional field (`str | None` -> str), else None."""
    base = _base_type(f.type)
    return None if base is f.type else base


def patterns(value, key: str) -> tuple[str, ...]:
    """One regex or a sequence of regexes -> a tuple, each checked to compile."""
    pats = (value,) if isinstance(value, str) else tuple(value)
    for p in pats:
        try:
            re.compile(p)
        except (re.error, TypeError) as e:
            raise ConfigError(f"config {key}: {p!r} is not a regular expression ({e})") from None
    return pats


def parse_field(f: dataclasses.Field, value, where: str):
    """One field's value from the config (None: its default), checked by its metadata."""
    key, meta = where + f.name, f.metadata
    kind = _base_type(f.type)
    if dataclasses.is_dataclass(kind):
        return parse_section(kind, section(value, key), key + ".")
    if value is None or (kind is str and isinstance(value, str) and not value):  # unset
        return f.default
    if "parse" in meta:
        return meta["parse"](value, key)
    if kind in CHECKS:
        value = CHECKS[kind](value, key, **meta)
    if "choices" in meta:
        choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        choose(
            choices if isinstance(choices, Mapping) else {c: c for c in choices},
            value,
            meta.get("label", key),
        )
    return value


class Section:
    """Base of an options section: from_config parses a mapping by the fields' metadata."""

    WHERE: ClassVar[str] = ""  # the section's dotted prefix in the config, e.g. "step.dp."

    @classmethod
    def from_config(cls, config=None, **context):
        """A config section (mapping or ConfigDict; None: all defaults) -> this options class."""
        mapping = section(config, cls.WHERE.rstrip(".") or "config")
        return parse_section(cls, mapping, cls.WHERE, **context)

    @classmethod
    def of(cls, config):
        """config itself if it is already this options class, else cls.from_config(config)."""
        return config if isinstance(config, cls) else cls.from_config(config)

    def check(self, **context) -> None:
        """Checks that span this section's fields (ConfigError); none by default."""


def parse_section(cls, mapping: Mapping, where: str, **context):
    """A frozen options dataclass from a plain mapping: every field parsed, then cls.check()."""
    fields = [f for f in dataclasses.fields(cls) if f.init and f.compare]
    spread = [f for f in fields if f.metadata.get("spread")]
    if not spread:
        check_keys(mapping, [f.name for f in fields], where)
    values = {f.name: parse_field(f, mapping.get(f.name), where) for f in fields if f not in spread}
    for f in spread:  # the keys of no other field (model kwargs)
        values[f.name] = frozen({k: v for k, v in mapping.items() if k not in values})
    options = cls(**values)
    options.check(**context)
    return options


def leaf_fields(cls, prefix: str = ""):
    """(dotted key, field) for every leaf field of an options dataclass, sections recursed."""
    for f in dataclasses.fields(cls):
        if not f.compare:
            continue
        if dataclasses.is_dataclass(f.type):
            yield from leaf_fields(f.type, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def as_dict(value):
    """Options -> nested plain JSON-able dicts (tuples as lists; spread fields beside the rest)."""
    if dataclasses.is_dataclass(value):
        fields = [f for f in dataclasses.fields(value) if f.compare]
        out = {f.name: as_dict(getattr(value, f.name)) for f in fields}
        for f in fields:
            if f.metadata.get("spread"):
                out.update(out.pop(f.name))
        return out
    if is_section(value):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [as_dict(v) for v in value]
    return value
