"""Ingest: a source manifest (``manifests/NAME.yaml``) → one row per recording.

A manifest names the corpus, its default license (SPDX id) and where the audio is: either
``audio: GLOB`` relative to the manifest, or ``listing: FILE.jsonl`` whose lines hold ``path``
(relative to the manifest) and optionally ``license``, ``lang`` and ``text``. Every problem in
the manifest or the listing is a ``ConfigError`` naming the file and line, raised before any work
starts. Files that are missing or unreadable are not manifest errors: they become rejected rows
at decode time, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from granary_pipe import licenses, schema
from granary_pipe.config import ConfigError, _errors, read_yaml


class SourceManifest(BaseModel):
    """The fields of a source manifest file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    license: str
    homepage: str | None = None
    citation: str | None = None
    description: str | None = None
    audio: str | None = None
    listing: str | None = None

    @model_validator(mode="after")
    def _one_location(self) -> "SourceManifest":
        if (self.audio is None) == (self.listing is None):
            raise ValueError("give exactly one of 'audio' (a glob) or 'listing' (a JSONL file)")
        return self


class ListingLine(BaseModel):
    """One line of a JSONL listing."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    license: str | None = None
    lang: str | None = None
    text: str | None = None


def load_manifest(path: Path) -> SourceManifest:
    """Read and validate a source manifest."""
    data, node = read_yaml(Path(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with name, license and audio or listing")
    try:
        return SourceManifest.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_errors(Path(path), node, err)) from None


def recording_id(source: str, rel_path: str) -> str:
    """Stable id from the source name and the file's path: ``[A-Za-z0-9_-]`` only, no dots."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", rel_path.rsplit(".", 1)[0]).strip("_")[-80:]
    digest = hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:8]
    return f"{source}-{stem}-{digest}"


def _listing_entries(listing: Path) -> list[tuple[int, ListingLine]]:
    if not listing.is_file():
        raise ConfigError(f"{listing}: listing file not found")
    entries = []
    with open(listing, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{listing}:{lineno}: not valid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{listing}:{lineno}: expected a JSON object with 'path'")
            try:
                entries.append((lineno, ListingLine.model_validate(obj)))
            except ValidationError as err:
                keys = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
                    for e in err.errors()
                )
                raise ConfigError(f"{listing}:{lineno}: {keys}") from None
    return entries


def list_recordings(manifest_path: Path) -> tuple[SourceManifest, pa.Table]:
    """The manifest and its recordings as rows (sorted by ``recording_id``)."""
    manifest_path = Path(manifest_path).resolve()
    manifest = load_manifest(manifest_path)
    base = manifest_path.parent
    if manifest.listing is not None:
        listing = base / manifest.listing
        entries = [(n, e.model_copy(update={"path": posixpath.normpath(e.path)}))
                   for n, e in _listing_entries(listing)]
        where = {}
        for lineno, e in entries:
            if e.path in where:
                raise ConfigError(f"{listing}:{lineno}: path {e.path!r} already listed on line {where[e.path]}")
            where[e.path] = lineno
    else:
        matches = sorted(p for p in base.glob(manifest.audio) if p.is_file())
        if not matches:
            raise ConfigError(f"{manifest_path}: audio glob {manifest.audio!r} matches no file under {base}")
        entries = [(0, ListingLine(path=str(p.relative_to(base)))) for p in matches]
    if not entries:
        raise ConfigError(f"{manifest_path}: the source lists no audio")
    rows = []
    for _, e in entries:
        raw_license = e.license if e.license is not None else manifest.license
        rid = recording_id(manifest.name, e.path)
        rows.append(
            {
                "id": rid,
                "recording_id": rid,
                "source": manifest.name,
                "audio_path": str((base / e.path).resolve()),
                "offset_s": 0.0,
                "license": licenses.normalize(raw_license),
                "license_raw": raw_license,
                "lang_hint": e.lang,
                "ref_text": e.text,
            }
        )
    rows.sort(key=lambda r: r["recording_id"])
    return manifest, schema.make_table(rows)
