"""Readers: list a source's audio in its corpus's layout as :class:`Entry` items; here the dispatch,
the source cache and the folder / JSONL / TSV readers. Design: docs/sources.md, "Readers"."""

from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import os
import posixpath
import re
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from granary_pipe.config import ConfigError, json_lines, utf8_lines
from granary_pipe.ingest import readers_archives, readers_base, readers_corpora
from granary_pipe.ingest.readers_base import AUDIO_EXTS, Entry, UrlReader, _Ctx, _Options, check_unique, listable
from granary_pipe.ingest.source import SourceManifest, require_runnable
from granary_pipe.rundir import atomic_path


class ListingLine(BaseModel):
    """One line of a JSONL listing."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    license: str | None = None
    lang: str | None = None
    text: str | None = None


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


def _messages(err: ValidationError, unknown: str) -> str:
    """``LOC: MESSAGE; ...`` of a validation error, ``unknown`` for a key the model does not have."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {unknown if e['type'] == 'extra_forbidden' else e['msg']}"
                     for e in err.errors())


def _is_remote(location: str) -> bool:
    m = re.match(r"^([a-z][a-z0-9+.\-]*)://", location, re.I)
    return m is not None and m[1].lower() != "file"


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
    ident = location if _is_remote(location) else str((manifest_path.parent / location.removeprefix("file://")).resolve())
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
        rel = readers_base._safe_rel(posixpath.relpath(remote, root))
        if rel is None or (include and not fnmatch.fnmatch(rel, include)):
            continue
        get(remote, dest / rel)
    return dest


def _localize(location: str, ctx: _Ctx, opts: _Options) -> Path:
    if _is_remote(location):
        return _download(location, ctx.cache / "download", opts.include)
    p = Path(location.removeprefix("file://")).expanduser()
    return (p if p.is_absolute() else ctx.base / p).resolve()


def read_folder(ctx: _Ctx, target: Path, opts: FolderOptions) -> list[Entry]:
    """Every audio file under ``target`` matching ``pattern``; keys relative to ``target``. Matches
    that cannot be opened (a symlink loop, a FIFO, ...) are listed too: decode rejects them."""
    root = readers_base._root_dir(target, "folder")
    return [Entry(readers_base._posix_rel(p, root), str(p), lang=opts.lang)
            for p in readers_base._match_files(ctx, root, [opts.pattern], audio_only=True, unopenable=True)]


def _glob_matches(ctx: _Ctx, start: Path, rel: str, pattern: str) -> list[Path]:
    """What ``audio: GLOB`` lists: every match but directories (:func:`listable`); a pattern without
    wildcards naming a folder (``audio: clips``) lists every audio file (:data:`AUDIO_EXTS`) under it."""
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


def _read_glob(ctx: _Ctx, pattern: str, opts: _Options) -> list[Entry]:
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
            raise ConfigError(f"{listing}:{lineno}: {_messages(err, 'unknown key')}") from None
        yield lineno, line


def read_jsonl(ctx: _Ctx, listing: Path, opts: _Options, base: Path | None = None) -> Iterator[Entry]:
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


def _tsv_header(reader: Any, listing: Path, opts: TsvOptions) -> dict[str, int]:
    """The header's column indexes; ``ConfigError`` when a column the options name is missing."""
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
    return cols


def _tsv_cell(row: list[str], cols: dict[str, int], col: str | None) -> str | None:
    i = cols.get(col) if col else None
    return readers_base._str(row[i]) if i is not None and i < len(row) else None


def _tsv_path(row: list[str], cols: dict[str, int], opts: TsvOptions, where: str) -> str:
    """The row's audio path relative to the audio directory (``path_format``, ``path_suffix`` applied)."""
    name = _tsv_cell(row, cols, opts.path_column)
    if name is None:
        raise ConfigError(f"{where}: empty {opts.path_column!r}")
    if opts.path_format is not None:
        try:
            name = opts.path_format.format(**{c: (row[i] if i < len(row) else "") for c, i in cols.items()})
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{where}: path_format {opts.path_format!r}: {exc!r}") from None
    rel = readers_base._safe_rel(name + opts.path_suffix)
    if rel is None:
        raise ConfigError(f"{where}: path {name!r} leaves the audio directory")
    return rel


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
    cols = _tsv_header(reader, listing, opts)
    while (row := _tsv_row(reader, listing)) is not None:
        if not any(c.strip() for c in row):
            continue
        where = f"{listing}:{reader.line_num}"
        key, audio = ctx.locate(base, str(audio_dir / _tsv_path(row, cols, opts, where)), where)
        yield Entry(key, audio, _tsv_cell(row, cols, opts.license_column),
                    readers_base._lang(_tsv_cell(row, cols, opts.lang_column)) or opts.lang,
                    _tsv_cell(row, cols, opts.text_column), where=where)


def _read_listing(ctx: _Ctx, listing: Path, opts: _Options, base: Path | None = None) -> Iterator[Entry]:
    if isinstance(opts, TsvOptions):
        return read_tsv(ctx, listing, opts, base)
    return read_jsonl(ctx, listing, opts, base)


def _listing_at(reader: str, ctx: _Ctx, target: Path, opts: _Options) -> Iterator[Entry]:
    """A ``url`` read by ``reader`` (``jsonl`` or ``tsv``): the listing file itself, or ``reader_options.listing``
    in it."""
    if target.is_file():
        return _read_listing(ctx, target, opts, base=target.parent)
    listing = getattr(opts, "listing", None)
    if not listing:
        raise ConfigError(f"{ctx.manifest_path}: reader {reader!r} with a directory 'url' needs reader_options.listing")
    return _read_listing(ctx, target / listing, opts, base=target)


_READERS: dict[str, tuple[type[_Options], UrlReader]] = {
    "folder": (FolderOptions, read_folder), "jsonl": (JsonlOptions, partial(_listing_at, "jsonl")),
    "tsv": (TsvOptions, partial(_listing_at, "tsv")),
    **readers_archives.URL_READERS, **readers_corpora.URL_READERS,
}
"""Each reader's options and what it lists of a localised ``url``."""


def reader_options(manifest: SourceManifest, manifest_path: Path) -> _Options:
    """The manifest's ``reader_options`` validated for its reader (errors name the option)."""
    reader = manifest.effective_reader or "folder"
    try:
        return _READERS[reader][0].model_validate(manifest.reader_options)
    except ValidationError as err:
        msg = _messages(err, f"unknown option for reader {reader!r}")
        raise ConfigError(f"{manifest_path}: reader_options: {msg}") from None


def iter_entries(manifest: SourceManifest, manifest_path: Path, *, cache_dir: Path | None = None,
                 materialize: bool = True) -> Iterator[Entry]:
    """The recordings of a runnable manifest as entries, in the reader's order, as they are read; raises
    like :func:`read_entries` but leaves the duplicate and no-audio checks to the caller."""
    manifest_path = Path(manifest_path).resolve()
    require_runnable(manifest, manifest_path)
    opts = reader_options(manifest, manifest_path)
    ctx = _Ctx(manifest.name, manifest_path, manifest_path.parent,
               _cache_for(manifest, manifest_path, opts, cache_dir), materialize, manifest.allow_outside_root)
    if manifest.audio is not None:
        yield from _read_glob(ctx, manifest.audio, opts)
    elif manifest.listing is not None:
        yield from _read_listing(ctx, ctx.base / manifest.listing, opts)
    elif manifest.url is not None:
        target = _localize(manifest.url, ctx, opts)
        if not target.exists():
            raise ConfigError(f"{manifest_path}: url {manifest.url!r}: {target} does not exist")
        yield from _READERS[manifest.effective_reader or "folder"][1](ctx, target, opts)


def read_entries(manifest: SourceManifest, manifest_path: Path, *, cache_dir: Path | None = None,
                 materialize: bool = True) -> list[Entry]:
    """The recordings of a runnable manifest as entries, in the reader's order (all in memory).
    ConfigError (naming file, line or option) for a catalog-only manifest, a bad listing, a glob
    matching nothing, a path outside the corpus root, one file listed twice or no audio at all.
    ``materialize=False`` lists Parquet/WebDataset audio without writing it (for audits)."""
    manifest_path = Path(manifest_path).resolve()
    entries = list(iter_entries(manifest, manifest_path, cache_dir=cache_dir, materialize=materialize))
    check_unique(entries, manifest_path, manifest.effective_reader)
    if not entries:
        raise ConfigError(no_audio(manifest_path))
    return entries


def no_audio(manifest_path: Path) -> str:
    """The error message for a source whose reader lists nothing."""
    return f"{manifest_path}: the source lists no audio"
