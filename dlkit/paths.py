"""Pytree paths: "/"-joined names inside a collection ("conv_0/kernel", "bn_0/mean"), matched by
regular expressions against the whole path (`re.fullmatch`)."""

import re

import jax


def matches(path: str, patterns) -> bool:
    """True if any pattern matches the whole path."""
    return any(re.fullmatch(p, path) for p in patterns)


def key_name(entry) -> str:
    """One jax key-path entry (DictKey, GetAttrKey, SequenceKey) as a string."""
    return str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))


def path_str(key_path) -> str:
    """A jax key path as "a/b/c"."""
    return "/".join(key_name(k) for k in key_path)


def leaf_paths(tree) -> list[str]:
    """The "a/b/c" path of every leaf of a pytree, in flatten order."""
    return [path_str(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def flatten(variables: dict) -> dict:
    """{collection: tree} -> {(collection, "a/b"): leaf}."""
    out = {}
    for col, tree in variables.items():
        for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[(col, path_str(kp))] = leaf
    return out


def unflatten(flat: dict) -> dict:
    """The inverse of flatten: {(collection, "a/b"): leaf} -> {collection: nested dict}."""
    out: dict = {}
    for (col, path), leaf in flat.items():
        node = out.setdefault(col, {})
        *parents, last = path.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = leaf
    return out


def few(items, n: int = 4) -> str:
    """The first n items joined by ", ", and how many more."""
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")
