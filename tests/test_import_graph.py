"""No import circle in the package, except the registries named in :data:`REGISTRIES`.

The graph is read from the source with ``ast`` (imports inside functions included: a lazy import
is a circle too, only hidden), so a circle fails here even where Python's import order would let
it pass. Imports under ``if TYPE_CHECKING:`` are left out: they never run. The run-directory
module and the unit vocabulary sit below both sides.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "granary_pipe"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo += child.orelse
            else:
                todo.append(child)


def _imports(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its source (run-time imports)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:  # ``from pkg import submodule`` depends on the submodule, not on pkg
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo += GRAPH[m]
    return False


def _circle(a: str, b: str) -> bool:
    return _reaches(a, b) and _reaches(b, a)


EXECUTORS = sorted(m for m in MODULES if m.startswith("granary_pipe.executors"))


def _circles() -> list[set[str]]:
    """The strongly connected parts of the graph with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = set()
            while True:
                w = stack.pop()
                part.add(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(part)

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


REGISTRIES = {"granary_pipe.registry": "granary_pipe.stages"}
"""Allowed circles: a registry that imports its entries' package to fill itself, whose modules
import the registry to register (``@register``)."""


def test_no_import_circle_but_the_named_registries():
    for part in _circles():
        registry = next((r for r in REGISTRIES if r in part), None)
        assert registry is not None, f"import circle: {sorted(part)}"
        entries = REGISTRIES[registry]
        assert all(m == registry or m == entries or m.startswith(entries + ".") for m in part), sorted(part)


def test_the_graph_sees_a_circle():
    """The checker itself: it finds the registry's circle, and a lazy import closes one."""
    assert _circle("granary_pipe.registry", "granary_pipe.stages.filters.basic")
    assert "granary_pipe.units" in GRAPH["granary_pipe.executors.ray"]
    lazy = ast.parse("def f():\n    from granary_pipe import rundir\nif TYPE_CHECKING:\n    import granary_pipe.units\n")
    assert [n.module for n in _runtime_nodes(lazy) if isinstance(n, ast.ImportFrom)] == ["granary_pipe"]
    assert not any(isinstance(n, ast.Import) for n in _runtime_nodes(lazy))


def test_train_primitives_and_launcher_do_not_import_each_other_back():
    assert not _reaches("granary_pipe.train.distributed", "granary_pipe.train.loop")
    assert not _reaches("granary_pipe.train.loop", "granary_pipe.train.launch")
    assert not _circle("granary_pipe.llm", "granary_pipe.llm.base")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_no_circle_between_pipeline_and_executors(executor):
    assert not _circle("granary_pipe.pipeline", executor), executor


@pytest.mark.parametrize("a, b", [
    ("granary_pipe.audit", "granary_pipe.io.release"),
    ("granary_pipe.audit_models", "granary_pipe.io.release"),
])
def test_no_circle_between_audit_and_release(a, b):
    assert not _circle(a, b)


@pytest.mark.parametrize("base", ["granary_pipe.rundir", "granary_pipe.units", "granary_pipe.listing"])
def test_shared_modules_import_no_user_of_theirs(base):
    users = ["granary_pipe.pipeline", "granary_pipe.io.release", "granary_pipe.io.sink", "granary_pipe.audit",
             "granary_pipe.report.summary", *EXECUTORS]
    assert [u for u in users if _reaches(base, u)] == []


def test_executors_import_before_the_pipeline_in_a_fresh_interpreter():
    """The order that exposed the old circle: an executor module first, then the driver."""
    code = ("import granary_pipe.executors.ray, granary_pipe.executors.beam, granary_pipe.pipeline, "
            "granary_pipe.audit, granary_pipe.io.release; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_cli_executor_choices_are_the_table(monkeypatch):
    """``--executor`` offers exactly the table's names, and an unknown name is refused from it."""
    from granary_pipe.cli import build_parser
    from granary_pipe.config import ConfigError
    from granary_pipe.executors import EXECUTORS, ExecutorOptions, check_executor

    run = next(a for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions
               if "--executor" in a.option_strings)
    assert list(run.choices) == list(EXECUTORS) == ["ray", "beam"]
    monkeypatch.setitem(EXECUTORS, "spark", EXECUTORS["beam"])
    assert "spark" in build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    with pytest.raises(ConfigError, match=r"unknown executor 'flink' \(available: ray, beam, spark\)"):
        check_executor("flink", ExecutorOptions())
    with pytest.raises(ConfigError, match="beam options given, but the executor is ray"):
        check_executor("ray", ExecutorOptions(beam_options=["runner=DirectRunner"]))
