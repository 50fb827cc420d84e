"""Check a local release against its ``release.json`` (``granary verify DIR``): size and sha256 of every listed
file, and tar members; and the path-safety rules download applies before it writes anything.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from granary_pipe.io.formats import format_names

RELEASE_JSON = "release.json"
SELECTION_JSON = "download.json"  # by granary download: the langs/formats it fetched, for verify


class UnsafePathError(ValueError):
    """A path from release.json or a tar member name that could escape its directory."""


def check_relpath(path: object) -> str:
    """``path`` if it is a safe relative POSIX path (no empty, ``.`` or ``..`` part, ``\\``, NUL or ``:``);
    else :class:`UnsafePathError`."""
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"unsafe path {path!r}: empty or not a string")
    if "\\" in path or "\0" in path or ":" in path:
        raise UnsafePathError(f"unsafe path {path!r}: backslash, NUL or ':' not allowed")
    if path.startswith("/"):
        raise UnsafePathError(f"unsafe path {path!r}: absolute")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise UnsafePathError(f"unsafe path {path!r}: empty, '.' or '..' component")
    return path


def safe_join(root: Path, rel: str) -> Path:
    """``root / rel`` after :func:`check_relpath`, checked to resolve inside ``root``."""
    check_relpath(rel)
    target = Path(root) / rel
    if not target.resolve().is_relative_to(Path(root).resolve()):
        raise UnsafePathError(f"unsafe path {rel!r}: resolves outside {root}")
    return target


def tar_problems(path: Path) -> list[str]:
    """Problems with the members of the tar at ``path``: each must be a regular file with a safe name."""
    problems = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for m in tar:
                if not m.isreg():
                    kind = ("symlink" if m.issym() else "hard link" if m.islnk() else
                            "directory" if m.isdir() else "special file")
                    problems.append(f"member {m.name!r} is a {kind}, not a regular file")
                    continue
                try:
                    check_relpath(m.name)
                except UnsafePathError as exc:
                    problems.append(f"member {m.name!r}: {str(exc).split(': ', 1)[-1]}")
    except (tarfile.TarError, OSError) as exc:
        problems.append(f"not a readable tar: {exc}")
    return problems


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def load_release_json(data: bytes | str) -> dict[str, Any]:
    """Parse release.json text; checks it has a ``shards`` list, that every path is safe and
    listed once (case-insensitively, so two entries cannot land on one file anywhere)."""
    rel = json.loads(data)
    if not isinstance(rel, dict) or not isinstance(rel.get("shards"), list):
        raise ValueError("not a release.json: no 'shards' list")
    seen: set[str] = set()
    for entry in [*rel["shards"], *rel.get("files", [])]:
        path = check_relpath(entry.get("path"))
        if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
            raise ValueError(f"release.json entry {path!r} lacks sha256/bytes")
        if path.lower() in seen or path.lower() in (RELEASE_JSON, SELECTION_JSON):
            raise ValueError(f"release.json lists {path!r} twice (or a reserved name)")
        seen.add(path.lower())
    return rel


def select(rel: dict[str, Any], langs: Iterable[str] | None = None,
           formats: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Entries of ``rel`` for ``langs``/``formats`` (None: all); top-level ``files`` always."""
    langs = set(langs) if langs is not None else None
    formats = set(formats) if formats is not None else None
    return [s for s in rel.get("shards", []) if (langs is None or s.get("lang") in langs)
            and (formats is None or s.get("format") in formats)] + list(rel.get("files", []))


def check_file(root: Path, entry: dict[str, Any], *, check_sha: bool = True) -> str | None:
    """Why the local copy of ``entry`` is not right (``"missing"``, size, sha256, tar members), or None."""
    path = safe_join(root, entry["path"])
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"size {size} != {entry['bytes']} bytes"
    if check_sha and sha256_file(path) != entry["sha256"]:
        return "sha256 mismatch"
    if path.name.endswith(".tar") and (problems := tar_problems(path)):
        return "unsafe tar: " + "; ".join(problems[:3])
    return None


class Checked:
    """What the verify reports share: ``missing`` paths and ``bad`` path -> reason."""

    missing: list[str]
    bad: dict[str, str]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.bad

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (``--json``)."""
        return {"passed": self.passed, **vars(self)}  # the dataclass fields, in order

    def lines(self) -> list[str]:
        """One line per problem; empty when passed."""
        return ([f"missing: {p}" for p in self.missing]
                + [f"bad: {p}: {why}" for p, why in sorted(self.bad.items())])


@dataclass
class VerifyReport(Checked):
    """Outcome of :func:`verify_release`: ``ok`` paths, ``missing`` paths, ``bad`` path -> reason."""

    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)


def verify_release(root: Path, langs: Iterable[str] | None = None, formats: Iterable[str] | None = None, *,
                   jobs: int = 4, progress: bool = False, checksums: bool = True) -> VerifyReport:
    """Check every file ``root/release.json`` lists for ``langs``/``formats`` (None for both: the
    selection in ``download.json``, else all) by size and, with ``checksums``, sha256, ``jobs`` at once.
    Raises ``FileNotFoundError`` without a release.json, :class:`UnsafePathError` for a listed path
    that escapes ``root``, ``KeyboardInterrupt`` within about a second of Ctrl-C."""
    from granary_pipe.io.parallel import run_parallel
    from granary_pipe.progress import Progress

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    root = Path(root)
    meta = root / RELEASE_JSON
    if not meta.is_file():
        raise FileNotFoundError(f"not a release directory: {meta} does not exist")
    rel = load_release_json(meta.read_bytes())
    formats = format_names(formats)
    sel_file = root / SELECTION_JSON
    if langs is None and formats is None and sel_file.is_file():
        sel = json.loads(sel_file.read_text(encoding="utf-8"))
        langs, formats = sel.get("langs"), sel.get("formats")
    report = VerifyReport(selection={"langs": sorted(langs) if langs is not None else None,
                                     "formats": sorted(formats) if formats is not None else None})
    entries = select(rel, langs, formats)
    lock = threading.Lock()

    def one(entry: dict[str, Any]) -> None:
        why = check_file(root, entry, check_sha=checksums)
        with lock:
            if why is None:
                report.ok.append(entry["path"])
            elif why == "missing":
                report.missing.append(entry["path"])
            else:
                report.bad[entry["path"]] = why
        bar.update(entry["bytes"])

    with Progress(sum(e["bytes"] for e in entries), desc="verify", unit="B", enabled=progress, every_s=5.0) as bar:
        run_parallel(entries, one, jobs, threading.Event())
    report.ok.sort()
    report.missing.sort()
    return report
