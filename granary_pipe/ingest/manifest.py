"""Ingest: a source manifest (``manifests/NAME.yaml``) → one row per recording.

A manifest names the corpus, its default license (SPDX id or expression; ``license_map`` says
what the source means by a string the registry does not guess, e.g. ``CC-BY``) and where the audio is: ``audio:
GLOB`` relative to the manifest, ``listing: FILE.jsonl`` (or a TSV with ``reader: tsv``) whose
lines hold ``path`` (relative to the manifest) and optionally ``license``, ``lang`` and ``text``,
or ``url:`` (a local path or fsspec URL) read by ``reader`` (Parquet, WebDataset, Libri-Light,
LibriSpeech, MLS, ...; see ``readers.py``). The schema is ``source.py``; a catalog-only manifest
(``manifests/catalog/``) loads but is refused here. Every problem in the manifest or the listing
is a ``ConfigError`` naming the file and line, raised before any work starts: among them a path
that resolves outside the corpus root (unless the manifest says ``allow_outside_root: true``) and
one file listed twice under two spellings. The listing is sorted and checked out of core
(``spill.py``), so its size is bounded by the disk, not by memory. Files that are missing or
unreadable are not manifest errors: they become rejected rows at decode time, with the reason.

A row carries both ``audio_path`` (the absolute local file the decoder opens; run-internal) and
``audio_relpath`` (the path relative to the corpus root, the reader's key: what a release shows).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from pathlib import Path

import pyarrow as pa

from granary_pipe import licenses
from granary_pipe.config import ConfigError
from granary_pipe.ingest.readers import Entry, ListingLine, iter_entries, no_audio
from granary_pipe.ingest.source import SourceManifest, load_manifest
from granary_pipe.ingest.spill import EntrySpill, SortedRows, listing_workdir

__all__ = ["ListingLine", "SortedRows", "SourceManifest", "list_recordings", "load_manifest", "recording_id",
           "sort_recordings"]


def recording_id(source: str, rel_path: str) -> str:
    """Stable id from the source name and the file's path: ``[A-Za-z0-9_-]`` only, no dots."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", rel_path.rsplit(".", 1)[0]).strip("_")[-80:]
    digest = hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:8]
    return f"{source}-{stem}-{digest}"


def list_recordings(manifest_path: Path, *, cache_dir: Path | None = None) -> tuple[SourceManifest, pa.Table]:
    """The manifest and its recordings as rows (sorted by ``recording_id``), in one table.

    A catalog-only manifest (no ``audio``/``listing``/``url``) is a ``ConfigError``: "catalog
    entry: set audio/listing/url to a local copy". ``cache_dir``: where remote copies and
    Parquet/WebDataset audio are materialised (default: ``reader_options.cache_dir``,
    ``$GRANARY_SOURCE_CACHE``, else ``$GRANARY_CACHE/sources``). A run plans its listing with
    :func:`sort_recordings` instead, which never holds the rows in memory.
    """
    with listing_workdir() as tmp:
        manifest, rows = sort_recordings(manifest_path, tmp, cache_dir=cache_dir)
        return manifest, pa.concat_tables(rows.tables(max(rows.count, 1))).combine_chunks()


def sort_recordings(manifest_path: Path, workdir: Path, *,
                    cache_dir: Path | None = None) -> tuple[SourceManifest, SortedRows]:
    """The manifest and its recording rows sorted by ``recording_id`` on disk under ``workdir``.

    Entries are spilled as the reader yields them, checked for duplicates by DuckDB under a
    memory limit and sorted by merging runs from disk (``ingest.spill``): the same rows, order
    and errors as the in-memory listing (a duplicate names both lines; a source that lists
    nothing is refused), in bounded memory.
    """
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
