"""Ingest: a source manifest (``manifests/NAME.yaml``) → one row per recording.

A manifest names the corpus, its default license (SPDX id) and where the audio is: ``audio:
GLOB`` relative to the manifest, ``listing: FILE.jsonl`` (or a TSV with ``reader: tsv``) whose
lines hold ``path`` (relative to the manifest) and optionally ``license``, ``lang`` and ``text``,
or ``url:`` (a local path or fsspec URL) read by ``reader`` (Parquet, WebDataset, Libri-Light,
LibriSpeech, MLS, ...; see ``readers.py``). The schema is ``source.py``; a catalog-only manifest
(``manifests/catalog/``) loads but is refused here. Every problem in the manifest or the listing
is a ``ConfigError`` naming the file and line, raised before any work starts: among them a path
that resolves outside the corpus root (unless the manifest says ``allow_outside_root: true``) and
one file listed twice under two spellings. Files that are missing or unreadable are not manifest
errors: they become rejected rows at decode time, with the reason.

A row carries both ``audio_path`` (the absolute local file the decoder opens; run-internal) and
``audio_relpath`` (the path relative to the corpus root, the reader's key: what a release shows).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from pathlib import Path

import pyarrow as pa

from granary_pipe import licenses, schema
from granary_pipe.ingest.readers import ListingLine, read_entries
from granary_pipe.ingest.source import SourceManifest, load_manifest

__all__ = ["ListingLine", "SourceManifest", "list_recordings", "load_manifest", "recording_id"]


def recording_id(source: str, rel_path: str) -> str:
    """Stable id from the source name and the file's path: ``[A-Za-z0-9_-]`` only, no dots."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", rel_path.rsplit(".", 1)[0]).strip("_")[-80:]
    digest = hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:8]
    return f"{source}-{stem}-{digest}"


def list_recordings(manifest_path: Path, *, cache_dir: Path | None = None) -> tuple[SourceManifest, pa.Table]:
    """The manifest and its recordings as rows (sorted by ``recording_id``).

    A catalog-only manifest (no ``audio``/``listing``/``url``) is a ``ConfigError``: "catalog
    entry: set audio/listing/url to a local copy". ``cache_dir``: where remote copies and
    Parquet/WebDataset audio are materialised (default: ``reader_options.cache_dir``,
    ``$GRANARY_SOURCE_CACHE``, else ``$GRANARY_CACHE/sources``).
    """
    manifest_path = Path(manifest_path).resolve()
    manifest = load_manifest(manifest_path)
    rows = []
    for e in read_entries(manifest, manifest_path, cache_dir=cache_dir):
        raw_license = e.license if e.license is not None else manifest.license
        rid = recording_id(manifest.name, e.key)
        rows.append(
            {
                "id": rid,
                "recording_id": rid,
                "source": manifest.name,
                "audio_path": e.path,
                "audio_relpath": e.key if not e.key.startswith("/") else posixpath.basename(e.key),
                "offset_s": 0.0,
                "license": licenses.normalize(raw_license),
                "license_raw": raw_license,
                "lang_hint": e.lang,
                "ref_text": e.text,
            }
        )
    rows.sort(key=lambda r: r["recording_id"])
    return manifest, schema.make_table(rows)
