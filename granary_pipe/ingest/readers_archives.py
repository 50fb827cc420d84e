"""Archive readers: Hugging Face Parquet shards and WebDataset tars, whose audio is written once
to files (``extracted/`` in the source cache; why and where: docs/sources.md, Readers)."""

from __future__ import annotations

import itertools
import json
import posixpath
import re
import tarfile
from pathlib import Path
from typing import Any, Iterator

from pydantic import Field

from granary_pipe.config import ConfigError
from granary_pipe.ingest import readers_base
from granary_pipe.ingest.readers_base import AUDIO_EXTS, Entry, UrlReader, _Ctx, _first, _lang, _Options, _str
from granary_pipe.rundir import write_bytes_atomic

TEXT_KEYS = ("text", "sentence", "transcription", "normalized_text", "raw_transcription", "transcript")
LANG_KEYS = ("lang", "language", "locale")
LICENSE_KEYS = ("license", "licence")


class ParquetOptions(_Options):
    pattern: str = "**/*.parquet"
    audio_column: str = "audio"
    text_column: str | None = None
    lang_column: str | None = None
    license_column: str | None = None
    batch_rows: int = Field(64, ge=1)


class WebDatasetOptions(_Options):
    patterns: list[str] = Field(default_factory=lambda: ["**/*.tar", "**/*.tar.gz", "**/*.tgz"])


def _strip_ext(rel: str) -> str:
    for ext in (".tar.gz", ".tgz", ".tar", ".parquet"):
        if rel.endswith(ext):
            return rel[: -len(ext)]
    return rel


def sniff_ext(data: bytes) -> str:
    """Audio container extension from the first bytes (``.bin`` when unrecognised)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return ".wav"
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:4] == b"OggS":
        return ".opus" if b"OpusHead" in data[:64] else ".ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return ".mp3"
    if data[4:8] == b"ftyp":
        return ".m4a"
    if data[:4] == b"\x1aE\xdf\xa3":
        return ".webm"
    return ".bin"


def _audio_name(name: str | None, data: bytes | None) -> str:
    """A safe file name for an audio value: its own name when it has an audio extension."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", posixpath.basename(name or "")).strip("._")[:80]
    if base and base.lower().endswith(AUDIO_EXTS):
        return base
    return f"{base or 'audio'}{sniff_ext(data or b'')}"


def write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically unless a file of that size is already there."""
    if path.is_file() and path.stat().st_size == len(data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data, durable=False)


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], path: Path, what: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise ConfigError(f"{path}: no {what} column {wanted!r} (columns: {columns})")
        return wanted
    return next((c for c in candidates if c in columns), None)


def read_parquet(ctx: _Ctx, target: Path, opts: ParquetOptions) -> list[Entry]:
    """Hugging Face Parquet shards; each audio value is written to ``extracted/KEY``."""
    import pyarrow.parquet as pq

    root = target.parent if target.is_file() else readers_base._root_dir(target, "parquet")
    files = [target] if target.is_file() else readers_base._match_files(ctx, root, [opts.pattern])
    out: list[Entry] = []
    for f in files:
        pf = pq.ParquetFile(f)
        columns = pf.schema_arrow.names
        _pick(columns, opts.audio_column, (), f, "audio")
        text_c = _pick(columns, opts.text_column, TEXT_KEYS, f, "text")
        lang_c = _pick(columns, opts.lang_column, LANG_KEYS, f, "language")
        lic_c = _pick(columns, opts.license_column, LICENSE_KEYS, f, "license")
        wanted = [c for c in (opts.audio_column, text_c, lang_c, lic_c) if c]
        stem = _strip_ext(readers_base._posix_rel(f, root))
        batches = pf.iter_batches(batch_size=opts.batch_rows, columns=wanted)
        for row, values in enumerate(itertools.chain.from_iterable(b.to_pylist() for b in batches)):
            out.append(_parquet_entry(ctx, root, f, stem, row, values[opts.audio_column], values.get(text_c),
                                      values.get(lang_c), values.get(lic_c), opts))
    return out


def _parquet_entry(ctx: _Ctx, root: Path, f: Path, stem: str, row: int, audio: Any, text: Any, lang: Any,
                   lic: Any, opts: ParquetOptions) -> Entry:
    data, name = None, None
    if isinstance(audio, dict):
        data, name = audio.get("bytes"), audio.get("path")
    elif isinstance(audio, (bytes, bytearray)):
        data = bytes(audio)
    elif isinstance(audio, str):
        name = audio
    elif audio is not None:
        raise ConfigError(f"{f}: row {row}: audio value of type {type(audio).__name__} (want bytes, a path or "
                          "a {{bytes, path}} struct)")
    meta = dict(license=_str(lic), lang=_lang(lang) or opts.lang, text=_str(text))
    key = f"{stem}/{row:08d}-{_audio_name(name, data)}"
    if data:
        extracted = ctx.cache / "extracted" / key
        if ctx.materialize:
            write_once(extracted, bytes(data))
        return Entry(key, str(extracted), **meta)
    # no bytes: the path refers to a file beside the shard (missing files are rejected at decode)
    rel = readers_base._safe_rel(name or "")
    path = str(ctx.confine(f.parent / rel, root, f"{f}: row {row}", shown=name)) if rel else ""
    return Entry(key, path, **meta)


def _tar_samples(tar_path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(sample key, extension, bytes) of each regular member, in archive order."""
    with tarfile.open(tar_path, mode="r|*") as tf:
        for member in tf:
            if not member.isfile():
                continue
            rel = readers_base._safe_rel(member.name)
            if rel is None:
                raise ConfigError(f"{tar_path}: member {member.name!r} leaves the archive")
            dirname, base = posixpath.split(rel)
            if "." not in base:
                continue
            stem, ext = base.split(".", 1)
            fh = tf.extractfile(member)
            yield (posixpath.join(dirname, stem), "." + ext.lower(), fh.read() if fh else b"")


def _samples(ctx: _Ctx, tar_path: Path, stem: str) -> dict[str, dict[str, Any]]:
    """A tar's samples by key: ``audio`` (key and path; its first audio member, written to
    ``extracted/TAR/MEMBER``), ``json`` metadata and ``txt`` transcript when it has them."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        for key, ext, data in _tar_samples(tar_path):
            s = samples.setdefault(key, {})
            if ext in AUDIO_EXTS and "audio" not in s:
                rel = f"{stem}/{key}{ext}"
                path = ctx.cache / "extracted" / rel
                if ctx.materialize:
                    write_once(path, data)
                s["audio"] = (rel, str(path))
            elif ext == ".json":
                try:
                    meta = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ConfigError(f"{tar_path}: {key}.json is not valid JSON: {exc}") from None
                s["json"] = meta if isinstance(meta, dict) else {}
            elif ext in (".txt", ".text", ".transcript"):
                s["txt"] = data.decode("utf-8", errors="replace").strip()
    except tarfile.TarError as exc:
        raise ConfigError(f"{tar_path}: not a readable tar archive: {exc}") from None
    return samples


def read_webdataset(ctx: _Ctx, target: Path, opts: WebDatasetOptions) -> list[Entry]:
    """WebDataset tars: one entry per sample with audio, in key order per tar."""
    root = target.parent if target.is_file() else readers_base._root_dir(target, "webdataset")
    tars = [target] if target.is_file() else readers_base._match_files(ctx, root, opts.patterns)
    out: list[Entry] = []
    for tar_path in tars:
        samples = _samples(ctx, tar_path, _strip_ext(readers_base._posix_rel(tar_path, root)))
        for key in sorted(samples):
            s = samples[key]
            if "audio" not in s:
                continue
            meta = s.get("json", {})
            out.append(Entry(s["audio"][0], s["audio"][1], _str(_first(meta, LICENSE_KEYS)),
                             _lang(_first(meta, LANG_KEYS)) or opts.lang,
                             _str(s.get("txt") or _first(meta, TEXT_KEYS))))
    return out


URL_READERS: dict[str, tuple[type[_Options], UrlReader]] = {
    "parquet": (ParquetOptions, read_parquet), "webdataset": (WebDatasetOptions, read_webdataset)}
