"""The reference part of docs/API.md, from each subpackage's __all__ and first docstring lines.

python tests/docs/api_reference.py   # prints the tables (paste them into docs/API.md)
"""

import functools
import importlib
import inspect

SECTIONS = [
    ("dlkit.errors", "exceptions with exit codes; name lookups"),
    ("dlkit.ops", "pure jnp math, no parameters"),
    ("dlkit.kernels", "Pallas kernels (interpret mode on CPU)"),
    ("dlkit.nn", "flax linen layers and models"),
    ("dlkit.models", "the model registry"),
    ("dlkit.data", "datasets by name, Grain pipelines"),
    ("dlkit.train", "state, steps, loop, checkpoints, loading runs"),
    ("dlkit.convert", "PyTorch / safetensors weights in and out"),
    ("dlkit.platform", "the door's host set-up (CPU backend only)"),
]


def one_line(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    if isinstance(obj, functools.partial) and obj.__doc__ == functools.partial.__doc__:
        doc = f"{obj.func.__name__} with {', '.join(f'{k}={v!r}' for k, v in obj.keywords.items())}"
    lines = []
    for line in doc.splitlines():  # the first sentence or paragraph, joined
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines).replace("|", "\\|")


def public(module: str) -> list[str]:
    return list(importlib.import_module(module).__all__)


def tables() -> str:
    out = []
    for module, what in SECTIONS:
        mod = importlib.import_module(module)
        out.append(f"## `{module}`: {what}\n\n| name | what it does |\n| --- | --- |")
        for name in mod.__all__:
            obj = getattr(mod, name)
            out.append(f"| `{name}` | {one_line(obj)} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables())
