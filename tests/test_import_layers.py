"""dlkit's imports, read from the source (ast): no cycle between modules, layers point one way
(ops -> kernels -> nn -> train -> extras), and no dlkit module imported inside a function."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "dlkit"

# Layer of each top-level part of dlkit: a module may import its own layer and those below.
LAYERS = {
    "errors": 0,
    "paths": 0,
    "platform": 6,  # the door's host set-up: no library module imports it
    "ops": 1,
    "kernels": 2,
    "nn": 3,
    "data": 3,
    "models": 4,
    "train": 5,
    "convert": 5,
    "extras": 6,
    "cli": 6,
    "__init__": 7,
}
# Optional heavy dependencies that may be imported inside a function (`import dlkit` stays light).
LAZY_OK = {"tensorflow_datasets", "grain", "matplotlib", "torch", "sklearn"}
LAZY_OK |= {"tqdm", "pydoc_data"}
# (importing module, imported module) pairs allowed inside functions or against the layers: none.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: pathlib.Path) -> str:
    parts = ("dlkit", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: pathlib.Path, known) -> list[tuple[str, bool, int]]:
    """[(imported module, inside a function?, line)]; `from a import b` names module a.b if any."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, inner, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    found.append((sub if sub in known else child.module, inner, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__" if len(parts) == 1 else parts[1]]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {m for m, inner, _ in imports(path, known) if not inner and m in known}
        for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges[v]:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_walker_finds_a_cycle_and_a_layer_break():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer("dlkit.ops.attention") < layer("dlkit.kernels.flash_attention")


def test_no_import_cycle_between_dlkit_modules():
    assert cycles(graph()) == []


def test_layers_point_one_way():
    bad = [
        (src, dst)
        for src, dsts in graph().items()
        for dst in dsts
        if layer(dst) > layer(src) and (src, dst) not in ALLOWED
    ]
    assert bad == [], "imports against the layers ops -> kernels -> nn -> train -> extras"


def test_no_function_level_imports_but_optional_heavy_ones():
    known = modules()
    bad = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {mod}"
        for name, path in known.items()
        for mod, inner, line in imports(path, known)
        if inner and mod.split(".")[0] not in LAZY_OK and (name, mod) not in ALLOWED
    ]
    assert bad == []


@pytest.mark.parametrize("pair", sorted(ALLOWED))
def test_allow_list_is_still_needed(pair):
    """An allowed pair that no longer occurs must leave the list."""
    src, dst = pair
    known = modules()
    if src not in known:
        pytest.fail(f"{src} is gone: remove {pair} from ALLOWED")
    mods = {m for m, inner, _ in imports(known[src], known)}
    assert dst in mods, f"{src} no longer imports {dst}: remove it from ALLOWED"
