"""Lines of the ``*.py`` files under a directory, split into code, docstrings, blank lines and comments.

    python scripts/line_stats.py granary_pipe            # the working tree
    git archive REV granary_pipe | tar -x -C /tmp/rev && python scripts/line_stats.py /tmp/rev/granary_pipe

Docstrings are the first string of a module, class or function (what ``ast.get_docstring`` reads).
"""

from __future__ import annotations

import argparse
import ast
import collections
from pathlib import Path


def kinds(source: str) -> list[str]:
    """One of ``code``, ``doc``, ``blank``, ``comment`` for each line of ``source``."""
    lines = source.splitlines()
    out = ["blank" if not line.strip() else "comment" if line.strip().startswith("#") else "code" for line in lines]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str) and first.end_lineno is not None:
                out[first.lineno - 1:first.end_lineno] = ["doc"] * (first.end_lineno - first.lineno + 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="directory whose *.py files are counted")
    root = parser.parse_args().root
    total: collections.Counter[str] = collections.Counter()
    by_dir: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in sorted(root.rglob("*.py")):
        counts = collections.Counter(kinds(path.read_text(encoding="utf-8")))
        total.update(counts)
        by_dir[str(path.parent.relative_to(root.parent))].update(counts)
    cols = ("code", "doc", "blank", "comment")
    print(f"{'directory':32s} {'lines':>6s} " + " ".join(f"{c:>7s}" for c in cols))
    for name, c in sorted(by_dir.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"{name:32s} {sum(c.values()):6d} " + " ".join(f"{c[k]:7d}" for k in cols))
    print(f"{'total':32s} {sum(total.values()):6d} " + " ".join(f"{total[k]:7d}" for k in cols))


if __name__ == "__main__":
    main()
