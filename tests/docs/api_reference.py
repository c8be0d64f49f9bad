"""The reference part of docs/API.md, from each subpackage's __all__ and first docstring lines,
and the model arguments table, from the registry's constructor signatures.

python tests/docs/api_reference.py           # prints the reference tables (paste into docs/API.md)
python tests/docs/api_reference.py --write   # rewrites API.md's generated model arguments table
"""

import functools
import importlib
import inspect
import pathlib
import sys

API_MD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "API.md"
BEGIN = (
    "<!-- model-arguments: generated from the constructors by "
    "`python tests/docs/api_reference.py --write`; tests/docs/test_docs.py checks it -->"
)
END = "<!-- /model-arguments -->"

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


def arguments(factory) -> str:
    """`name=default` for each constructor argument (a partial's bound ones as its defaults)."""
    out = []
    for p in inspect.signature(factory).parameters.values():
        if p.name in ("parent", "name") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = "" if p.default is inspect.Parameter.empty else f"={p.default!r}"
        out.append(f"`{p.name}{default}`")
    return ", ".join(out).replace("|", "\\|")


def model_arguments() -> str:
    """The generated table: every registry model, its class and its arguments with defaults."""
    from dlkit import models

    rows = [BEGIN, "| model | class | arguments (defaults) |", "| --- | --- | --- |"]
    for name, factory in sorted(models.registry().items()):
        cls = factory.func if isinstance(factory, functools.partial) else factory
        rows.append(f"| `{name}` | `{cls.__module__}.{cls.__name__}` | {arguments(factory)} |")
    rows.append(END)
    return "\n".join(rows)


def generated_section(text: str) -> str:
    """API.md's generated model arguments table, markers included ('' if absent)."""
    if BEGIN not in text or END not in text:
        return ""
    start = text.index(BEGIN)
    return text[start : text.index(END, start) + len(END)]


def write_model_arguments() -> None:
    text = API_MD.read_text()
    old = generated_section(text)
    if not old:
        raise SystemExit(f"{API_MD} lacks the markers {BEGIN!r} ... {END!r}")
    API_MD.write_text(text.replace(old, model_arguments()))


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_model_arguments()
    else:
        print(tables())
