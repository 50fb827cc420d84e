"""Shared pieces of the source readers: :class:`Entry`, the reader context and options, path helpers,
and the listing-wide checks (confinement to the corpus root, one row per file). Design: docs/sources.md,
"Readers"."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict

from granary_pipe.config import ConfigError

AUDIO_EXTS = (".flac", ".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".webm")
"""Extensions the folder, WebDataset and corpus readers treat as audio."""
_LANG_RE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")


@dataclass(frozen=True)
class Entry:
    """One recording: ``key``, its path relative to the corpus root (the id is made from it); ``path``,
    the local file the decoder opens; ``where``, the listing's ``FILE:LINE`` when a listing names it."""

    key: str
    path: str
    license: str | None = None
    lang: str | None = None
    text: str | None = None
    where: str | None = None


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache_dir: str | None = None
    include: str | None = None
    lang: str | None = None


@dataclass
class _Ctx:
    name: str
    manifest_path: Path
    base: Path
    cache: Path
    materialize: bool
    allow_outside_root: bool = False
    _real_roots: dict[Path, Path] = field(default_factory=dict, repr=False)

    def confine(self, path: Path, root: Path, where: str, shown: str | None = None) -> Path:
        """``path`` resolved (symlinks followed); ``ConfigError`` at ``where`` when it lies outside ``root``
        (unless ``allow_outside_root``). A missing file or a symlink loop passes: decode rejects it."""
        real = Path(os.path.realpath(path))
        if self.allow_outside_root:
            return real
        real_root = self._real_roots.get(root)
        if real_root is None:
            real_root = self._real_roots[root] = Path(os.path.realpath(root))
        if real == real_root or real.is_relative_to(real_root):
            return real
        raise ConfigError(
            f"{where}: {shown if shown is not None else str(path)!r} resolves to {real}, outside the corpus "
            f"root {real_root}; list only files under the root, or set 'allow_outside_root: true' in "
            f"{self.manifest_path} if the corpus really lives elsewhere")

    def locate(self, root: Path, listed: str, where: str) -> tuple[str, str]:
        """(key, path) of a listed path: ``key`` lexically normalised relative to ``root`` (absolute for
        an absolute path outside it, so ids do not move with the manifest), ``path`` confined and resolved."""
        joined = os.path.normpath(os.path.join(root, listed))
        real = self.confine(Path(joined), root, where, shown=listed)
        rel = _posix_rel(Path(joined), root)
        if os.path.isabs(listed) and (rel == ".." or rel.startswith("../")):
            return Path(joined).as_posix(), str(real)
        return rel, str(real)


UrlReader = Callable[[_Ctx, Path, Any], Iterable[Entry]]
"""A reader of a localised ``url``: (context, target, its options) -> entries."""


def _lang(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    v = value.strip()
    return v if _LANG_RE.match(v) else None


def _str(value: Any) -> str | None:
    s = value if value is None or isinstance(value, str) else str(value).strip()
    return s or None


def _first(d: dict, keys: tuple[str, ...]) -> Any:
    return next((d[k] for k in keys if d.get(k) is not None), None)


def _posix_rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _safe_rel(name: str) -> str | None:
    """A member / file name as a safe relative POSIX path, or None (absolute, ``..``, empty)."""
    if not name:
        return None
    rel = posixpath.normpath(name.replace("\\", "/"))
    if not rel or rel in (".", "..") or rel.startswith("../") or rel.startswith("/") or "/../" in f"/{rel}/":
        return None
    return rel


def listable(path: Path) -> bool:
    """Whether a path a glob matched is listed: anything but a directory (decode rejects the unopenable)."""
    try:
        return not path.is_dir()
    except OSError:
        return True


def _match_files(ctx: _Ctx, root: Path, patterns: list[str], audio_only: bool = False,
                 unopenable: bool = False) -> list[Path]:
    """Files under ``root`` matching any of ``patterns`` (sorted, not resolved), each confined to ``root``;
    ``unopenable``: also matches that are not regular files (:func:`listable`)."""
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in root.glob(pattern) if (listable(p) if unopenable else p.is_file()))
    files = sorted(found)
    if audio_only:
        files = [p for p in files if p.suffix.lower() in AUDIO_EXTS]
    for p in files:
        ctx.confine(p, root, f"{ctx.manifest_path}: tree {root}", shown=_posix_rel(p, root))
    return files


def _file_id(path: str) -> tuple:
    """What makes two paths one file: ``(st_dev, st_ino)`` when it exists, else the resolved path."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def _listed_at(first: Entry, dup: Entry) -> str:
    """Where ``first`` was listed, as seen from ``dup``'s line: "on line N" in the same file."""
    if first.where and dup.where:
        f_file, _, f_line = first.where.rpartition(":")
        d_file, _, _ = dup.where.rpartition(":")
        if f_file == d_file and f_line.isdigit():
            return f"on line {f_line}"
    return f"at {first.where}" if first.where else "earlier"


def duplicate_error(first: Entry, dup: Entry, same_file: bool, manifest_path: Path, reader: str | None) -> ConfigError:
    """The error for ``dup`` repeating ``first``: the same key, or (``same_file``) the same file."""
    here = dup.where or f"{manifest_path}: reader {reader!r}"
    if not same_file:
        return ConfigError(f"{here}: path {dup.key!r} already listed {_listed_at(first, dup)}")
    return ConfigError(f"{here}: path {dup.key!r} is the same file as {first.key!r}, already listed "
                       f"{_listed_at(first, dup)}; list each recording once")


def check_unique(entries: list[Entry], manifest_path: Path, reader: str | None) -> None:
    """``ConfigError`` naming both places for the first entry whose key, or file (:func:`_file_id`), an
    earlier entry has; ``ingest.spill`` finds the same one out of core."""
    by_key: dict[str, Entry] = {}
    by_file: dict[tuple, Entry] = {}
    for e in entries:
        first = by_key.setdefault(e.key, e)
        if first is not e:
            raise duplicate_error(first, e, False, manifest_path, reader)
        if not e.path:
            continue
        first = by_file.setdefault(_file_id(e.path), e)
        if first is not e:
            raise duplicate_error(first, e, True, manifest_path, reader)


def _root_dir(target: Path, what: str) -> Path:
    if not target.is_dir():
        raise ConfigError(f"{target}: {what} root is not a directory")
    return target

