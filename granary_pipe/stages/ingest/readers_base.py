"""Shared pieces of the source readers (see :mod:`granary_pipe.stages.ingest.readers`):
the :class:`Entry` they return, the reader context and options base, and path/value helpers."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from granary_pipe.config import ConfigError

AUDIO_EXTS = (".flac", ".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".webm")
"""Extensions the folder, WebDataset and corpus readers treat as audio."""
_LANG_RE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")


@dataclass(frozen=True)
class Entry:
    """One recording of a source."""

    key: str
    path: str
    license: str | None = None
    lang: str | None = None
    text: str | None = None


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


def _lang(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    v = value.strip()
    return v if _LANG_RE.match(v) else None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip() if not isinstance(value, str) else value
    return s if s != "" else None


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


def _match_files(root: Path, patterns: list[str], audio_only: bool = False) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in root.glob(pattern) if p.is_file())
    files = sorted(found)
    if audio_only:
        files = [p for p in files if p.suffix.lower() in AUDIO_EXTS]
    return files


def _root_dir(target: Path, what: str) -> Path:
    if not target.is_dir():
        raise ConfigError(f"{target}: {what} root is not a directory")
    return target

