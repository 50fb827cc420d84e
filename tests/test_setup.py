"""The set-up step installs every program the tests call, so a fresh machine passes `make test`.

A green CI once hid a missing ``espeak-ng``: CI's machine had it from an earlier hand install,
a fresh machine did not. This test reads the programs the tests run (literal names given to
``shutil.which`` or first in a ``subprocess.run`` list) and checks that each one comes from the venv (a PyPI package)
or from a Debian package named in the Makefile's ``SYSTEM_PACKAGES``, which ``make setup``
installs (or an Essential package, which every Debian system has); and that the README names
those packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CALLS = [
    re.compile(r"shutil\.which\(\s*[\"']([\w.+-]+)[\"']"),
    re.compile(r"subprocess\.(?:run|Popen|check_output|check_call)\(\s*\[\s*[\"']([\w.+-]+)[\"']"),
]
ALTERNATIVES = re.compile(r"for \w+ in \(([^)]*)\)[^\n]*shutil\.which\(")
"""``for n in ("chromium", "chromium-browser") ... shutil.which(n)``: the first name is the one set up."""


def programs_called_by_tests() -> dict[str, str]:
    """Program → the first test file that calls it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        names = [m for rx in CALLS for m in rx.findall(text)]
        names += [re.findall(r"[\"']([\w.+-]+)[\"']", m)[0] for m in ALTERNATIVES.findall(text)]
        for name in names:
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def system_packages() -> list[str]:
    """``SYSTEM_PACKAGES`` of the Makefile."""
    m = re.search(r"^SYSTEM_PACKAGES\s*:?=\s*(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "the Makefile defines no SYSTEM_PACKAGES"
    return m[1].split("#")[0].split()


def debian_package(path: str) -> str | None:
    """The Debian package that owns ``path`` (usr-merged paths tried both ways), or None."""
    real = os.path.realpath(path)
    candidates = {path, real}
    for p in list(candidates):
        for usr, root in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/")):
            if p.startswith(usr):
                candidates.add(root + p[len(usr):])
            elif p.startswith(root):
                candidates.add(usr + p[len(root):])
    for candidate in sorted(candidates):
        out = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def essential(package: str) -> bool:
    """True for a Debian package marked Essential (never missing)."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", package], capture_output=True, text=True)
    return out.stdout.strip() == "yes"


def test_the_scan_finds_the_programs_known_to_be_called():
    """Guards the scanner itself: these calls exist in the tests today."""
    called = programs_called_by_tests()
    assert {"espeak-ng", "chromium", "ps", "hadolint"} <= set(called), called


@pytest.mark.parametrize("program", sorted(programs_called_by_tests()))
def test_every_program_the_tests_call_is_installed_by_the_setup(program):
    venv_bin = Path(sys.executable).parent
    if (venv_bin / program).exists():
        return  # a console script of a package in the test environment (pyproject [dev])
    path = shutil.which(program)
    where = programs_called_by_tests()[program]
    assert path, (f"{where} calls {program!r}, which is not installed: add its Debian package to "
                  "SYSTEM_PACKAGES in the Makefile (make setup installs it)")
    package = debian_package(path)
    if package and essential(package):
        return  # dpkg, coreutils, ...: on every Debian system
    assert package in system_packages(), (
        f"{where} calls {program!r} ({path}, Debian package {package}); {package} is not in the Makefile's "
        f"SYSTEM_PACKAGES {system_packages()}: a fresh machine would not have it")


def test_readme_names_the_system_packages_and_the_setup():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p for p in system_packages() if f"`{p}`" not in readme]
    assert not missing, f"README.md does not name the system packages {missing}"
    assert "make setup" in readme
