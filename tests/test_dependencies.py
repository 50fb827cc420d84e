"""`pip install .` gives the whole CPU curation tool, with every package it imports declared.

Reads every import in ``granary_pipe`` (with ``ast``), maps it to the distribution that provides
it, and checks that it is declared in ``pyproject.toml``: in ``dependencies`` when the importing
module is part of the core tool, else in the extra that module belongs to. A module-level import
of an extra's package in a core module would break ``pip install .``; this catches it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "granary_pipe"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

EXTRA_MODULES = {
    "train": ("granary_pipe/train/",),
    "beam": ("granary_pipe/executors/beam.py",),
    "llm": ("granary_pipe/llm/transformers_backend.py",),
    "gpu": ("granary_pipe/llm/vllm_backend.py",),
    "diarize": ("granary_pipe/stages/segment/pyannote.py",),
}
"""Modules that may import an extra's packages (lazily or at module level)."""


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _declared(requirements: list[str]) -> set[str]:
    return {_name(r) for r in requirements}


CORE = _declared(PYPROJECT["dependencies"])
EXTRAS = {k: _declared(v) for k, v in PYPROJECT["optional-dependencies"].items()}
NOT_HERE = {"vllm": ["vllm"], "pyannote": ["pyannote.audio"]}
"""Packages of extras that live in other environments (the GPU image, .venv-diarize)."""
DISTS = {**NOT_HERE, **{m: [d.lower().replace("_", "-") for d in ds] for m, ds in metadata.packages_distributions().items()}}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported at module level?) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], id(node) in top_level))
    return out


def third_party(module: str) -> bool:
    return module not in sys.stdlib_module_names and module != "granary_pipe" and module != "__future__"


def _extra_of(rel: str) -> str | None:
    return next((extra for extra, prefixes in EXTRA_MODULES.items() if rel.startswith(prefixes)), None)


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_is_declared(path):
    rel = str(path.relative_to(ROOT))
    extra = _extra_of(rel)
    allowed = CORE | (EXTRAS[extra] if extra else set())
    for module, _ in imports(path):
        if not third_party(module):
            continue
        dists = DISTS.get(module)
        assert dists, f"{rel} imports {module}, which no installed distribution provides"
        if set(dists) & allowed:
            continue
        # a lazy import of an extra's package inside a function is fine when that extra declares it
        any_extra = [e for e, names in EXTRAS.items() if set(dists) & names]
        assert any_extra, f"{rel} imports {module} ({dists}), declared nowhere in pyproject.toml"
        assert not extra and all(top is False for m, top in imports(path) if m == module), (
            f"{rel} imports {module} at module level, but {dists} is only in extra(s) {any_extra}")


def test_one_provider_of_the_fasttext_module():
    assert DISTS.get("fasttext") == ["fasttext-predict"], DISTS.get("fasttext")


def test_core_has_no_engine_of_an_extra():
    assert not CORE & {"apache-beam", "torch", "vllm", "transformers", "pyannote.audio", "sentencepiece"}
    assert "ray" in CORE and all("data" not in r for r in PYPROJECT["dependencies"] if r.startswith("ray["))
