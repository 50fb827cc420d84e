"""Emulate a Docker build context from a ``.dockerignore`` and ask what an image gets.

No Docker engine exists where the tests run, so ``tests/test_docker_lint.py`` applies the ignore
rules itself, the way Docker's pattern matcher (moby/patternmatcher, used by BuildKit) does:

* patterns are cleaned (leading and trailing ``/`` dropped) and matched against paths relative to
  the context root; ``*`` and ``?`` stay inside one path element, ``**`` spans any number of them;
* a path is excluded when the last pattern that matches the path *or one of its parent
  directories* is an exclusion; a ``!pattern`` re-includes.

``package_data`` lists the files ``pip install .`` puts into the package from
``[tool.setuptools.package-data]``, so a test can check that the context (and thus the image)
holds every data file the tool reads at run time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

Rule = tuple[bool, re.Pattern]
"""(is a ``!`` re-inclusion, compiled pattern)."""


def _regex(pattern: str) -> re.Pattern:
    """Docker's glob as a regex over ``/``-separated relative paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            assert pattern[i] not in "[]\\", f"character classes and escapes are not emulated: {pattern!r}"
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def rules(ignore_file: Path) -> list[Rule]:
    """The patterns of a ``.dockerignore`` file, in order."""
    out = []
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        out.append((negate, _regex(line.lstrip("!").strip("/"))))
    return out


def excluded(ignore: list[Rule], rel: str) -> bool:
    """Whether Docker leaves ``rel`` (relative, ``/``-separated) out of the context."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    out = False
    for negate, rx in ignore:
        if any(rx.match(p) for p in prefixes):
            out = not negate
    return out


def context_files(root: Path, ignore: list[Rule]) -> set[str]:
    """Relative paths of every file and symlink Docker would send from ``root``."""
    reinclusions = [rx.pattern for negate, rx in ignore if negate]
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        rel = (lambda name: name) if base == "." else (lambda name: f"{base}/{name}")
        links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        found |= {rel(n) for n in filenames + links if not excluded(ignore, rel(n))}
        # do not descend into a left-out directory that no `!pattern` can reach into
        dirnames[:] = [d for d in dirnames if d not in links and not (
            excluded(ignore, rel(d)) and not any(p.startswith(re.escape(rel(d) + "/")) or p.startswith("(?:.*/)?")
                                                 for p in reinclusions))]
    return found


def package_data(root: Path, package: str, globs: list[str]) -> set[str]:
    """Files (relative to ``root``) that ``[tool.setuptools.package-data]`` globs select in ``package``."""
    pkg = root / package
    return {p.relative_to(root).as_posix() for g in globs for p in pkg.glob(g) if p.is_file()}
