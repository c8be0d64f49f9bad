"""Docs that cannot rot: every ```python block of README.md, docs/ARCHITECTURE.md and docs/API.md
runs (each file's blocks in order, in one namespace, in a temporary working directory), and
docs/API.md's reference tables list exactly each subpackage's __all__, in order, and its model
arguments table is the one generated from the registry's constructors.

A block preceded by a line `<!-- skip: reason -->` is not run (for blocks that need a trained
workdir or a download; none do today)."""

import importlib
import pathlib
import re

import pytest
from api_reference import SECTIONS, generated_section, model_arguments

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/ARCHITECTURE.md", "docs/API.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block not marked <!-- skip: ... -->."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().splitlines()
        if before and before[-1].strip().startswith("<!-- skip"):
            continue
        blocks.append((text[: m.start()].count("\n") + 2, m.group(1)))
    return blocks


@pytest.mark.parametrize("doc", DOCS)
def test_python_blocks_run(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks((ROOT / doc).read_text())
    assert blocks, f"{doc} has no python blocks"
    namespace: dict = {"__name__": "__docs__"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{doc}:{line}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{doc}, block at line {line}: {type(e).__name__}: {e}")


def test_api_tables_list_every_public_name_in_order():
    text = (ROOT / "docs" / "API.md").read_text()
    for module, _ in SECTIONS:
        section = text.split(f"### `{module}`", 1)
        assert len(section) == 2, f"docs/API.md has no section for {module}"
        body = section[1].split("\n### ", 1)[0]
        listed = re.findall(r"^\| `([^`]+)` \|", body, re.M)
        want = list(importlib.import_module(module).__all__)
        assert listed == want, f"{module}: API.md lists {listed}, __all__ is {want}"


def test_skip_markers_are_rare():
    marked = sum((ROOT / doc).read_text().count("<!-- skip") for doc in DOCS)
    assert marked <= 2, "more than two doc blocks are skipped: make them runnable"


def test_model_arguments_table_is_current():
    """API.md's model arguments table equals the one generated from the constructors now."""
    text = (ROOT / "docs" / "API.md").read_text()
    assert generated_section(text), "docs/API.md has no generated model arguments table"
    stale = (
        "docs/API.md's model arguments table is stale: python tests/docs/api_reference.py --write"
    )
    assert generated_section(text) == model_arguments(), stale
