"""Ingest: a source manifest → one recording row per entry, sorted by ``recording_id`` out of core;
every manifest or listing problem is a ``ConfigError`` before any work. Design: docs/architecture.md,
"Data flow" (Ingest)."""

from __future__ import annotations

import hashlib
import posixpath
import re
from pathlib import Path

import pyarrow as pa

from granary_pipe import licenses
from granary_pipe.config import ConfigError
from granary_pipe.ingest.readers import Entry, iter_entries, no_audio
from granary_pipe.ingest.source import SourceManifest, load_manifest
from granary_pipe.ingest.spill import EntrySpill, SortedRows, listing_workdir


def recording_id(source: str, rel_path: str) -> str:
    """Stable id from the source name and the file's path: ``[A-Za-z0-9_-]`` only, no dots."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", rel_path.rsplit(".", 1)[0]).strip("_")[-80:]
    digest = hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:8]
    return f"{source}-{stem}-{digest}"


def list_recordings(manifest_path: Path, *, cache_dir: Path | None = None) -> tuple[SourceManifest, pa.Table]:
    """The manifest and its recording rows in one table (a run uses :func:`sort_recordings`). ``cache_dir``:
    for remote copies and extracted audio (default: ``reader_options.cache_dir``, else the user's cache)."""
    with listing_workdir() as tmp:
        manifest, rows = sort_recordings(manifest_path, tmp, cache_dir=cache_dir)
        return manifest, pa.concat_tables(rows.tables(max(rows.count, 1))).combine_chunks()


def sort_recordings(manifest_path: Path, workdir: Path, *,
                    cache_dir: Path | None = None) -> tuple[SourceManifest, SortedRows]:
    """The manifest and its recording rows sorted by ``recording_id`` on disk under ``workdir``."""
    manifest_path = Path(manifest_path).resolve()
    manifest = load_manifest(manifest_path)
    spill = EntrySpill(workdir, manifest_path, manifest.effective_reader)
    try:
        for e in iter_entries(manifest, manifest_path, cache_dir=cache_dir):
            spill.add(e, recording_row(manifest, e))
    finally:
        spill.close()
    if not spill.count:
        raise ConfigError(no_audio(manifest_path))
    return manifest, spill.finish()


def recording_row(manifest: SourceManifest, e: Entry) -> dict:
    """The recording row ingest makes of one entry (its :data:`spill.ROW_COLUMNS`)."""
    raw_license = e.license if e.license is not None else manifest.license
    rid = recording_id(manifest.name, e.key)
    return {
        "id": rid,
        "recording_id": rid,
        "source": manifest.name,
        "audio_path": e.path,
        "audio_relpath": e.key if not e.key.startswith("/") else posixpath.basename(e.key),
        "offset_s": 0.0,
        "license": licenses.normalize(raw_license, manifest.license_map),
        "license_raw": raw_license,
        "lang_hint": e.lang,
        "ref_text": e.text,
    }
