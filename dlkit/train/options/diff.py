"""Resume checks: which keys a rerun may change, and how two configs differ otherwise."""

from dlkit.errors import ConfigError
from dlkit.train.options.migrate import migrate
from dlkit.train.options.parse import as_dict, leaf_fields
from dlkit.train.options.sections import RunOptions


def resumable_keys() -> frozenset[str]:
    """Dotted config keys a rerun may change without making the checkpoint another run's."""
    keys = set()
    for dotted, f in leaf_fields(RunOptions):
        resumable = f.metadata.get("resumable")
        if resumable is True:
            keys.add(dotted)
        elif resumable:  # a free-form section's resumable keys (data: where, not what)
            keys.update(f"{dotted}.{k}" for k in resumable)
    return frozenset(keys)


MISSING = "<missing>"  # a key one config has and the other lacks


def _flat(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> {dotted key: leaf}."""
    out: dict = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def canonical(config) -> dict:
    """{dotted key: value} of a config with defaults filled (parsed), for comparing runs.

    A config that no longer parses (e.g. saved by an older dlkit) is compared as migrated.
    """
    try:
        return _flat(RunOptions.from_config(config).to_dict())
    except ConfigError:
        return _flat(as_dict(migrate(config)[0]))


def config_differences(saved, current) -> list[str]:
    """'key (saved x, now y)' for every non-resumable setting in which two configs differ."""
    a, b, skip = canonical(saved), canonical(current), resumable_keys()
    keys = sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))
    return [f"{k} (saved {a.get(k, MISSING)!r}, now {b.get(k, MISSING)!r})" for k in keys]
