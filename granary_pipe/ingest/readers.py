"""Readers: list a source's audio in the layout its corpus ships in, as uniform entries.

Every reader returns :class:`Entry` items ``(key, path, license, lang, text)``: ``key`` is a
stable relative name the recording id is made from (it does not depend on where the copy or the
cache lives), ``path`` the local file the decoder opens, and ``license``/``lang``/``text`` the
per-file license override, language hint and reference transcript when the layout has them.
Ingest (``manifest.list_recordings``) turns entries into recording rows.

**Confined, and one row per file.** Every path must resolve (symlinks followed) inside the corpus
root: the manifest's directory for ``audio``/``listing``, the localised ``url`` for ``url``; a
path outside it is a ``ConfigError`` naming the listing line, unless the manifest says
``allow_outside_root: true``. Two entries with the same key, or naming the same file (relative and
absolute, through a symlink, ``a/../b.wav``), are refused naming both (``readers_base``).

========================  =====================================================================
reader                    layout
========================  =====================================================================
``folder``                any tree of audio files: ``audio: GLOB`` (relative to the manifest;
                          a folder lists every audio file under it), or ``url: ROOT`` +
                          ``reader_options.pattern`` (default: every audio file)
``jsonl``                 ``listing: FILE.jsonl``, lines ``{"path", "license"?, "lang"?, "text"?}``,
                          paths relative to the manifest (or to ``url`` + ``reader_options.listing``)
``tsv``                   Common Voice style TSV with a header: ``path``, ``sentence``, ``locale``
                          (column names configurable; ``path_format`` builds the audio path from
                          the row, e.g. VoxPopuli ``"{id:.4}/{id}.ogg"``); audio in ``clips/``
                          beside the TSV by default
``parquet``               Hugging Face Parquet shards with an audio column (``struct<bytes, path>``,
                          ``binary`` or a ``string`` path) plus text / language / license columns
``webdataset``            WebDataset tars (``.tar``, ``.tar.gz``, ``.tgz``): ``KEY.flac|wav|...`` with
                          ``KEY.json`` (``text``/``lang``/``license``) and/or ``KEY.txt``
``librilight``            Libri-Light: ``subset/speaker/book/*.flac`` with a ``*.json`` per file
``librispeech``           LibriSpeech: ``speaker/chapter/*.flac`` + ``speaker-chapter.trans.txt``
``mls``                   Multilingual LibriSpeech: ``split/transcripts.txt`` (``utt<TAB>text``) +
                          ``split/audio/speaker/book/utt.flac|.opus``
========================  =====================================================================

**Where audio comes from.** ``url`` may be a local path or any fsspec URL. A remote URL is
copied once into the source cache (``download/``; files already there with the right size are
kept), then read like a local tree; ``reader_options.include`` (a glob on paths relative to the
URL) limits what is copied.

**Parquet and WebDataset audio is materialised to files.** The decoder opens paths (PyAV), the
row schema has no room for audio bytes, and PyAV cannot open ``tar://`` members, so each audio
value / tar member is written once to ``extracted/`` in the source cache under its key (atomic
rename; a file already there with the right size is kept). The cache is
``reader_options.cache_dir`` (relative to the manifest), else ``$GRANARY_SOURCE_CACHE``, else
``$GRANARY_CACHE/sources`` (``~/.cache/granary_pipe/sources``), in a sub-directory named by the
source and a digest of its location. Paths depend only on that, so a rerun lists the same
``audio_path`` values and resumes. On a cluster, put the cache on storage every worker sees.
The cost is one extra copy of the audio on disk; ``materialize=False`` lists without writing.

Language values that are not ISO 639 codes (``"English"``) are dropped, not guessed.

This module holds the dispatch (:func:`read_entries`), the source cache and the folder / JSONL /
TSV readers; the Parquet and WebDataset readers are in ``readers_archives``, the Libri-Light /
LibriSpeech / MLS readers in ``readers_corpora``, shared pieces in ``readers_base`` (all their
public names are importable from here).
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import os
import posixpath
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from granary_pipe.config import ConfigError, json_lines, utf8_lines
from granary_pipe.ingest.readers_archives import (
    LANG_KEYS, LICENSE_KEYS, TEXT_KEYS, ParquetOptions, WebDatasetOptions, read_parquet, read_webdataset,
    sniff_ext, write_once,
)
from granary_pipe.ingest.readers_base import (
    AUDIO_EXTS, Entry, _Ctx, _lang, _match_files, _Options, _posix_rel, _root_dir, _safe_rel, _str, check_unique,
    listable,
)
from granary_pipe.ingest.readers_corpora import (
    LibriLightOptions, LibriSpeechOptions, MlsOptions, read_librilight, read_librispeech, read_mls,
)
from granary_pipe.ingest.source import SourceManifest, require_runnable
from granary_pipe.rundir import atomic_path

__all__ = [
    "AUDIO_EXTS", "LANG_KEYS", "LICENSE_KEYS", "TEXT_KEYS", "Entry", "ListingLine",
    "FolderOptions", "JsonlOptions", "TsvOptions", "ParquetOptions", "WebDatasetOptions",
    "LibriLightOptions", "LibriSpeechOptions", "MlsOptions",
    "default_cache_root", "iter_entries", "no_audio", "read_entries", "reader_options", "sniff_ext", "write_once",
    "read_folder", "read_jsonl", "read_tsv", "read_parquet", "read_webdataset",
    "read_librilight", "read_librispeech", "read_mls",
]


class ListingLine(BaseModel):
    """One line of a JSONL listing."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    license: str | None = None
    lang: str | None = None
    text: str | None = None


# ----------------------------------------------------------------------------- options

class FolderOptions(_Options):
    pattern: str = "**/*"


class JsonlOptions(_Options):
    listing: str = "listing.jsonl"


class TsvOptions(_Options):
    listing: str | None = None
    audio_dir: str | None = None
    path_column: str = "path"
    text_column: str | None = "sentence"
    lang_column: str | None = "locale"
    license_column: str | None = "license"
    path_suffix: str = ""
    path_format: str | None = None


_OPTIONS: dict[str, type[_Options]] = {
    "folder": FolderOptions, "jsonl": JsonlOptions, "tsv": TsvOptions, "parquet": ParquetOptions,
    "webdataset": WebDatasetOptions, "librilight": LibriLightOptions, "librispeech": LibriSpeechOptions,
    "mls": MlsOptions,
}


# ----------------------------------------------------------------------------- helpers
def _is_remote(location: str) -> bool:
    m = re.match(r"^([a-z][a-z0-9+.\-]*)://", location, re.I)
    return bool(m) and m[1].lower() != "file"


def default_cache_root() -> Path:
    """``$GRANARY_SOURCE_CACHE``, else ``$GRANARY_CACHE/sources`` (``~/.cache/granary_pipe/sources``)."""
    env = os.environ.get("GRANARY_SOURCE_CACHE")
    if env:
        return Path(env)
    from granary_pipe.models import cache_dir

    return cache_dir() / "sources"


def _cache_for(manifest: SourceManifest, manifest_path: Path, opts: _Options, cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        root = Path(cache_dir)
    elif opts.cache_dir:
        root = manifest_path.parent / opts.cache_dir
    else:
        root = default_cache_root()
    location = manifest.url or manifest.listing or manifest.audio or ""
    if _is_remote(location):
        ident = location
    else:
        ident = str((manifest_path.parent / location.removeprefix("file://")).resolve())
    digest = hashlib.sha1(ident.encode("utf-8")).hexdigest()[:10]
    return root.resolve() / f"{manifest.name}-{digest}"


def _download(url: str, dest: Path, include: str | None) -> Path:
    """Copy a remote file or tree into ``dest`` (once; same-size files are kept); return the local copy."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/") or root

    def get(remote: str, local: Path) -> None:
        size = fs.size(remote)
        if local.is_file() and size is not None and local.stat().st_size == size:
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(local, durable=False) as tmp:
            fs.get_file(remote, str(tmp))

    if fs.isfile(root):
        target = dest / posixpath.basename(root)
        get(root, target)
        return target
    if not fs.isdir(root):
        raise FileNotFoundError(f"{url}: no such file or directory")
    for remote in sorted(fs.find(root)):
        rel = _safe_rel(posixpath.relpath(remote, root))
        if rel is None or (include and not fnmatch.fnmatch(rel, include)):
            continue
        get(remote, dest / rel)
    return dest


def _localize(location: str, ctx: _Ctx, opts: _Options) -> Path:
    if _is_remote(location):
        return _download(location, ctx.cache / "download", opts.include)
    p = Path(location.removeprefix("file://")).expanduser()
    return (p if p.is_absolute() else ctx.base / p).resolve()


# ----------------------------------------------------------------------------- readers

def read_folder(ctx: _Ctx, target: Path, opts: FolderOptions) -> list[Entry]:
    """Every audio file under ``target`` matching ``pattern``; keys relative to ``target``. Matches
    that cannot be opened (a symlink loop, a FIFO, ...) are listed too: decode rejects them."""
    root = _root_dir(target, "folder")
    return [Entry(_posix_rel(p, root), str(p), lang=opts.lang)
            for p in _match_files(ctx, root, [opts.pattern], audio_only=True, unopenable=True)]


def _glob_matches(ctx: _Ctx, start: Path, rel: str, pattern: str) -> list[Path]:
    """What ``audio: GLOB`` lists: every match but directories (:func:`listable`: a symlink loop
    or a FIFO is listed, and decode rejects it with its reason). A pattern without wildcards that
    names a folder (``audio: clips``) lists every audio file under it, as ``clips/**/*`` would
    with the audio extensions (:data:`AUDIO_EXTS`)."""
    try:
        if not glob.has_magic(rel) and (start / rel).is_dir():
            folder = start / rel
            found = sorted(p for p in folder.glob("**/*") if p.suffix.lower() in AUDIO_EXTS and listable(p))
            if not found:
                raise ConfigError(f"{ctx.manifest_path}: audio {pattern!r} is a folder with no audio file under it "
                                  f"(extensions {', '.join(AUDIO_EXTS)}); give a glob such as '{pattern}/**/*.wav'")
            return found
        return sorted(p for p in start.glob(rel) if listable(p))
    except (ValueError, NotImplementedError) as exc:
        raise ConfigError(f"{ctx.manifest_path}: audio glob {pattern!r}: {exc}") from None


def _read_glob(ctx: _Ctx, pattern: str, opts: FolderOptions) -> list[Entry]:
    """``audio: GLOB``: files matching the glob (relative to the manifest, or absolute), confined
    to the manifest's directory; keys relative to it (see :func:`_glob_matches`)."""
    anchor = Path(pattern).anchor
    start, rel = (Path(anchor), pattern[len(anchor):]) if anchor else (ctx.base, pattern)
    matches = _glob_matches(ctx, start, rel, pattern)
    if not matches:
        raise ConfigError(f"{ctx.manifest_path}: audio glob {pattern!r} matches no file under {ctx.base}")
    where = f"{ctx.manifest_path}: audio glob {pattern!r}"
    listed = [str(p) if anchor else os.path.relpath(p, ctx.base) for p in matches]  # as the glob was written
    return [Entry(*ctx.locate(ctx.base, name, where), lang=opts.lang) for name in listed]


def _jsonl_lines(listing: Path) -> Iterator[tuple[int, ListingLine]]:
    """The listing's lines as they are read (a generator: the listing is never held whole)."""
    if not listing.is_file():
        raise ConfigError(f"{listing}: listing file not found")
    for lineno, obj in json_lines(listing):
        if not isinstance(obj, dict):
            raise ConfigError(f"{listing}:{lineno}: expected a JSON object with 'path'")
        try:
            line = ListingLine.model_validate(obj)
        except ValidationError as err:
            keys = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
                for e in err.errors()
            )
            raise ConfigError(f"{listing}:{lineno}: {keys}") from None
        yield lineno, line


def read_jsonl(ctx: _Ctx, listing: Path, opts: JsonlOptions, base: Path | None = None) -> Iterator[Entry]:
    """A JSONL listing, line by line; paths relative to ``base`` (the manifest's directory, or the ``url`` root)."""
    base = ctx.base if base is None else base
    for lineno, line in _jsonl_lines(listing):
        where = f"{listing}:{lineno}"
        key, path = ctx.locate(base, line.path, where)
        yield Entry(key, path, line.license, line.lang or opts.lang, line.text, where=where)


def _tsv_row(reader: Any, listing: Path) -> list[str] | None:
    """The next row of a TSV ``csv.reader``, None at the end; a ``csv.Error`` (a field over
    ``csv.field_size_limit``, a stray line break) as a ``ConfigError`` naming the line."""
    try:
        return next(reader, None)
    except csv.Error as exc:
        raise ConfigError(f"{listing}:{reader.line_num}: not a valid TSV row: {exc}") from None


def read_tsv(ctx: _Ctx, listing: Path, opts: TsvOptions, base: Path | None = None) -> Iterator[Entry]:
    """A Common Voice style TSV, row by row; audio in ``audio_dir`` (default ``clips/`` beside the TSV if present)."""
    base = ctx.base if base is None else base
    if not listing.is_file():
        raise ConfigError(f"{listing}: listing file not found")
    if opts.audio_dir is not None:
        audio_dir = listing.parent / opts.audio_dir
    else:
        audio_dir = listing.parent / "clips" if (listing.parent / "clips").is_dir() else listing.parent
    lines = (text for _, text in utf8_lines(listing))  # QUOTE_NONE: one row per line
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = _tsv_row(reader, listing)
    if not header:
        raise ConfigError(f"{listing}:1: empty TSV (expected a header with {opts.path_column!r})")
    cols = {name.strip(): i for i, name in enumerate(header)}
    if opts.path_column not in cols:
        raise ConfigError(f"{listing}:1: no {opts.path_column!r} column in the header {list(cols)}")
    for field in ("text_column", "lang_column", "license_column"):
        col = getattr(opts, field)
        if col is not None and col not in cols and field in opts.model_fields_set:
            raise ConfigError(f"{listing}:1: no {col!r} column in the header {list(cols)}")

    def cell(row: list[str], col: str | None) -> str | None:
        i = cols.get(col) if col else None
        return _str(row[i]) if i is not None and i < len(row) else None

    while (row := _tsv_row(reader, listing)) is not None:
        lineno = reader.line_num
        if not row or not any(c.strip() for c in row):
            continue
        name = cell(row, opts.path_column)
        if name is None:
            raise ConfigError(f"{listing}:{lineno}: empty {opts.path_column!r}")
        if opts.path_format is not None:
            try:
                name = opts.path_format.format(**{c: (row[i] if i < len(row) else "") for c, i in cols.items()})
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"{listing}:{lineno}: path_format {opts.path_format!r}: {exc!r}") from None
        rel = _safe_rel(name + opts.path_suffix)
        if rel is None:
            raise ConfigError(f"{listing}:{lineno}: path {name!r} leaves the audio directory")
        where = f"{listing}:{lineno}"
        key, audio = ctx.locate(base, str(audio_dir / rel), where)
        yield Entry(key, audio, cell(row, opts.license_column),
                    _lang(cell(row, opts.lang_column)) or opts.lang, cell(row, opts.text_column), where=where)


_URL_READERS: dict[str, Callable[..., Iterable[Entry]]] = {
    "folder": read_folder, "parquet": read_parquet, "webdataset": read_webdataset,
    "librilight": read_librilight, "librispeech": read_librispeech, "mls": read_mls,
}


# ----------------------------------------------------------------------------- entry point

def reader_options(manifest: SourceManifest, manifest_path: Path) -> _Options:
    """The manifest's ``reader_options`` validated for its reader (errors name the option)."""
    reader = manifest.effective_reader or "folder"
    try:
        return _OPTIONS[reader].model_validate(manifest.reader_options)
    except ValidationError as err:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: "
                        f"{'unknown option for reader ' + repr(reader) if e['type'] == 'extra_forbidden' else e['msg']}"
                        for e in err.errors())
        raise ConfigError(f"{manifest_path}: reader_options: {msg}") from None


def iter_entries(manifest: SourceManifest, manifest_path: Path, *, cache_dir: Path | None = None,
                 materialize: bool = True) -> Iterator[Entry]:
    """The recordings of a runnable manifest as entries, in the reader's order, as they are read
    (JSONL and TSV listings line by line; the other layouts list their tree first).

    Raises ConfigError like :func:`read_entries`, except that it leaves the two listing-wide
    checks to the caller: one file listed twice (:func:`check_unique`, or ``ingest.spill`` out of
    core) and a source that lists no audio.
    """
    manifest_path = Path(manifest_path).resolve()
    require_runnable(manifest, manifest_path)
    opts = reader_options(manifest, manifest_path)
    ctx = _Ctx(manifest.name, manifest_path, manifest_path.parent,
               _cache_for(manifest, manifest_path, opts, cache_dir), materialize, manifest.allow_outside_root)
    reader = manifest.effective_reader
    if manifest.audio is not None:
        yield from _read_glob(ctx, manifest.audio, opts)
    elif manifest.listing is not None:
        listing = ctx.base / manifest.listing
        yield from (read_tsv if reader == "tsv" else read_jsonl)(ctx, listing, opts)
    else:
        target = _localize(manifest.url, ctx, opts)
        if not target.exists():
            raise ConfigError(f"{manifest_path}: url {manifest.url!r}: {target} does not exist")
        if reader in ("jsonl", "tsv"):
            if target.is_file():
                root, listing = target.parent, target
            elif getattr(opts, "listing", None):
                root, listing = target, target / opts.listing
            else:
                raise ConfigError(f"{manifest_path}: reader 'tsv' with a directory 'url' needs reader_options.listing")
            yield from (read_tsv if reader == "tsv" else read_jsonl)(ctx, listing, opts, base=root)
        else:
            yield from _URL_READERS[reader](ctx, target, opts)


def read_entries(manifest: SourceManifest, manifest_path: Path, *, cache_dir: Path | None = None,
                 materialize: bool = True) -> list[Entry]:
    """The recordings of a runnable manifest as entries, in the reader's order (all in memory).

    Raises ConfigError (naming file, line or option) for a catalog-only manifest, a bad listing,
    a glob that matches nothing, a path that resolves outside the corpus root (unless
    ``allow_outside_root``), one file listed twice (by key, or by the file itself), or a source
    that lists no audio.
    ``materialize=False`` lists Parquet/WebDataset audio without writing it (for audits).
    """
    manifest_path = Path(manifest_path).resolve()
    entries = list(iter_entries(manifest, manifest_path, cache_dir=cache_dir, materialize=materialize))
    check_unique(entries, manifest_path, manifest.effective_reader)
    if not entries:
        raise ConfigError(no_audio(manifest_path))
    return entries


def no_audio(manifest_path: Path) -> str:
    """The error message for a source whose reader lists nothing."""
    return f"{manifest_path}: the source lists no audio"
