"""Readers: list a source's audio in the layout its corpus ships in, as uniform entries.

Every reader returns :class:`Entry` items ``(key, path, license, lang, text)``: ``key`` is a
stable relative name the recording id is made from (it does not depend on where the copy or the
cache lives), ``path`` the local file the decoder opens, and ``license``/``lang``/``text`` the
per-file license override, language hint and reference transcript when the layout has them.
Ingest (``manifest.list_recordings``) turns entries into recording rows.

========================  =====================================================================
reader                    layout
========================  =====================================================================
``folder``                any tree of audio files: ``audio: GLOB`` (relative to the manifest), or
                          ``url: ROOT`` + ``reader_options.pattern`` (default: every audio file)
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
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from granary_pipe.config import ConfigError
from granary_pipe.stages.ingest.source import SourceManifest, require_runnable

AUDIO_EXTS = (".flac", ".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".webm")
"""Extensions the folder, WebDataset and corpus readers treat as audio."""

TEXT_KEYS = ("text", "sentence", "transcription", "normalized_text", "raw_transcription", "transcript")
LANG_KEYS = ("lang", "language", "locale")
LICENSE_KEYS = ("license", "licence")
_LANG_RE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")
_LANG_NAMES = {"english": "en", "german": "de", "dutch": "nl", "french": "fr", "spanish": "es",
               "italian": "it", "portuguese": "pt", "polish": "pl"}
"""Language names the LibriVox-derived layouts (Libri-Light JSON, ``mls_<language>``) use."""


@dataclass(frozen=True)
class Entry:
    """One recording of a source."""

    key: str
    path: str
    license: str | None = None
    lang: str | None = None
    text: str | None = None


class ListingLine(BaseModel):
    """One line of a JSONL listing."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    license: str | None = None
    lang: str | None = None
    text: str | None = None


# ----------------------------------------------------------------------------- options

class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache_dir: str | None = None
    include: str | None = None
    lang: str | None = None


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


class ParquetOptions(_Options):
    pattern: str = "**/*.parquet"
    audio_column: str = "audio"
    text_column: str | None = None
    lang_column: str | None = None
    license_column: str | None = None
    batch_rows: int = Field(64, ge=1)


class WebDatasetOptions(_Options):
    patterns: list[str] = Field(default_factory=lambda: ["**/*.tar", "**/*.tar.gz", "**/*.tgz"])


class LibriLightOptions(_Options):
    pattern: str = "**/*.flac"


class LibriSpeechOptions(_Options):
    pass


class MlsOptions(_Options):
    audio_exts: list[str] = Field(default_factory=lambda: [".flac", ".opus", ".wav"])


_OPTIONS: dict[str, type[_Options]] = {
    "folder": FolderOptions, "jsonl": JsonlOptions, "tsv": TsvOptions, "parquet": ParquetOptions,
    "webdataset": WebDatasetOptions, "librilight": LibriLightOptions, "librispeech": LibriSpeechOptions,
    "mls": MlsOptions,
}


@dataclass
class _Ctx:
    name: str
    manifest_path: Path
    base: Path
    cache: Path
    materialize: bool


# ----------------------------------------------------------------------------- helpers

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
    ext = sniff_ext(data or b"")
    return f"{base or 'audio'}{ext}"


def write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically unless a file of that size is already there."""
    if path.is_file() and path.stat().st_size == len(data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


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
        tmp = local.with_name(f".{local.name}.tmp-{os.getpid()}")
        fs.get_file(remote, str(tmp))
        os.replace(tmp, local)

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


# ----------------------------------------------------------------------------- readers

def read_folder(ctx: _Ctx, target: Path, opts: FolderOptions) -> list[Entry]:
    """Every audio file under ``target`` matching ``pattern``; keys relative to ``target``."""
    root = _root_dir(target, "folder")
    return [Entry(_posix_rel(p, root), str(p), lang=opts.lang)
            for p in _match_files(root, [opts.pattern], audio_only=True)]


def _read_glob(ctx: _Ctx, pattern: str, opts: FolderOptions) -> list[Entry]:
    matches = sorted(p for p in ctx.base.glob(pattern) if p.is_file())
    if not matches:
        raise ConfigError(f"{ctx.manifest_path}: audio glob {pattern!r} matches no file under {ctx.base}")
    return [Entry(str(p.relative_to(ctx.base)), str(p.resolve()), lang=opts.lang) for p in matches]


def _jsonl_lines(listing: Path) -> list[tuple[int, ListingLine]]:
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


def read_jsonl(ctx: _Ctx, listing: Path, opts: JsonlOptions, base: Path | None = None) -> list[Entry]:
    """A JSONL listing; paths relative to ``base`` (the manifest's directory, or the ``url`` root)."""
    base = ctx.base if base is None else base
    where: dict[str, int] = {}
    out = []
    for lineno, line in _jsonl_lines(listing):
        key = posixpath.normpath(line.path)
        if key in where:
            raise ConfigError(f"{listing}:{lineno}: path {key!r} already listed on line {where[key]}")
        where[key] = lineno
        out.append(Entry(key, str((base / key).resolve()), line.license, line.lang or opts.lang, line.text))
    return out


def read_tsv(ctx: _Ctx, listing: Path, opts: TsvOptions, base: Path | None = None) -> list[Entry]:
    """A Common Voice style TSV; audio in ``audio_dir`` (default ``clips/`` beside the TSV if present)."""
    base = ctx.base if base is None else base
    if not listing.is_file():
        raise ConfigError(f"{listing}: listing file not found")
    if opts.audio_dir is not None:
        audio_dir = (listing.parent / opts.audio_dir).resolve()
    else:
        audio_dir = listing.parent / "clips" if (listing.parent / "clips").is_dir() else listing.parent
    out, where = [], {}
    with open(listing, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
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

        for lineno, row in enumerate(reader, start=2):
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
            audio = (audio_dir / rel).resolve()
            key = _posix_rel(audio, base)
            if key in where:
                raise ConfigError(f"{listing}:{lineno}: path {name!r} already listed on line {where[key]}")
            where[key] = lineno
            out.append(Entry(key, str(audio), cell(row, opts.license_column),
                             _lang(cell(row, opts.lang_column)) or opts.lang, cell(row, opts.text_column)))
    return out


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], path: Path, what: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise ConfigError(f"{path}: no {what} column {wanted!r} (columns: {columns})")
        return wanted
    return next((c for c in candidates if c in columns), None)


def read_parquet(ctx: _Ctx, target: Path, opts: ParquetOptions) -> list[Entry]:
    """Hugging Face Parquet shards; each audio value is written to ``extracted/KEY``."""
    import pyarrow.parquet as pq

    root = target.parent if target.is_file() else _root_dir(target, "parquet")
    files = [target] if target.is_file() else _match_files(root, [opts.pattern])
    out: list[Entry] = []
    for f in files:
        pf = pq.ParquetFile(f)
        columns = pf.schema_arrow.names
        if opts.audio_column not in columns:
            raise ConfigError(f"{f}: no audio column {opts.audio_column!r} (columns: {columns})")
        text_c = _pick(columns, opts.text_column, TEXT_KEYS, f, "text")
        lang_c = _pick(columns, opts.lang_column, LANG_KEYS, f, "language")
        lic_c = _pick(columns, opts.license_column, LICENSE_KEYS, f, "license")
        wanted = [c for c in (opts.audio_column, text_c, lang_c, lic_c) if c]
        stem = _strip_ext(_posix_rel(f, root))
        row = 0
        for batch in pf.iter_batches(batch_size=opts.batch_rows, columns=wanted):
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                out.append(_parquet_entry(ctx, f, stem, row, data[opts.audio_column][i],
                                          data[text_c][i] if text_c else None,
                                          data[lang_c][i] if lang_c else None,
                                          data[lic_c][i] if lic_c else None, opts))
                row += 1
    return out


def _parquet_entry(ctx: _Ctx, f: Path, stem: str, row: int, audio: Any, text: Any, lang: Any, lic: Any,
                   opts: ParquetOptions) -> Entry:
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
        path = ctx.cache / "extracted" / key
        if ctx.materialize:
            write_once(path, bytes(data))
        return Entry(key, str(path), **meta)
    # no bytes: the path refers to a file beside the shard (missing files are rejected at decode)
    rel = _safe_rel(name or "")
    return Entry(key, str((f.parent / rel).resolve()) if rel else "", **meta)


def _tar_samples(tar_path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(sample key, extension, bytes) of each regular member, in archive order."""
    with tarfile.open(tar_path, mode="r|*") as tf:
        for member in tf:
            if not member.isfile():
                continue
            rel = _safe_rel(member.name)
            if rel is None:
                raise ConfigError(f"{tar_path}: member {member.name!r} leaves the archive")
            dirname, base = posixpath.split(rel)
            if "." not in base:
                continue
            stem, ext = base.split(".", 1)
            fh = tf.extractfile(member)
            yield (posixpath.join(dirname, stem), "." + ext.lower(), fh.read() if fh else b"")


def read_webdataset(ctx: _Ctx, target: Path, opts: WebDatasetOptions) -> list[Entry]:
    """WebDataset tars; audio members are written to ``extracted/TAR/MEMBER``."""
    root = target.parent if target.is_file() else _root_dir(target, "webdataset")
    tars = [target] if target.is_file() else _match_files(root, opts.patterns)
    out: list[Entry] = []
    for tar_path in tars:
        stem = _strip_ext(_posix_rel(tar_path, root))
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
        for key in sorted(samples):
            s = samples[key]
            if "audio" not in s:
                continue
            meta = s.get("json", {})
            out.append(Entry(s["audio"][0], s["audio"][1], _str(_first(meta, LICENSE_KEYS)),
                             _lang(_first(meta, LANG_KEYS)) or opts.lang,
                             _str(s.get("txt") or _first(meta, TEXT_KEYS))))
    return out


def read_librilight(ctx: _Ctx, target: Path, opts: LibriLightOptions) -> list[Entry]:
    """Libri-Light ``subset/speaker/book/*.flac`` (+ ``*.json`` metadata, optional); no text."""
    root = _root_dir(target, "librilight")
    out = []
    for flac in _match_files(root, [opts.pattern]):
        lang = opts.lang
        meta_path = flac.with_suffix(".json")
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{meta_path}: not valid JSON: {exc}") from None
            book = meta.get("book_meta") if isinstance(meta, dict) else None
            name = book.get("language") if isinstance(book, dict) else None
            if lang is None and name:
                lang = _LANG_NAMES.get(str(name).strip().lower())
        out.append(Entry(_posix_rel(flac, root), str(flac), lang=lang or "en"))
    return out


def read_librispeech(ctx: _Ctx, target: Path, opts: LibriSpeechOptions) -> list[Entry]:
    """LibriSpeech ``speaker/chapter/speaker-chapter-utt.flac`` with ``speaker-chapter.trans.txt``."""
    root = _root_dir(target, "librispeech")
    texts: dict[Path, str] = {}
    for trans in _match_files(root, ["**/*.trans.txt"]):
        with open(trans, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                utt, _, text = line.strip().partition(" ")
                if not text or not re.match(r"^[\w-]+$", utt):
                    raise ConfigError(f"{trans}:{lineno}: expected 'UTTERANCE-ID TEXT'")
                texts[(trans.parent / f"{utt}.flac").resolve()] = text.strip()
    audio = {p.resolve() for p in _match_files(root, ["**/*.flac"])} | set(texts)
    lang = opts.lang or "en"
    return [Entry(_posix_rel(p, root), str(p), lang=lang, text=texts.get(p)) for p in sorted(audio)]


def read_mls(ctx: _Ctx, target: Path, opts: MlsOptions) -> list[Entry]:
    """Multilingual LibriSpeech: ``split/transcripts.txt`` + ``split/audio/speaker/book/utt.EXT``."""
    root = _root_dir(target, "mls")
    out = []
    for trans in _match_files(root, ["**/transcripts.txt"]):
        lang = opts.lang
        if lang is None:
            for part in reversed(trans.resolve().parts):
                m = re.match(r"^mls_([a-z]+)", part)
                if m and m[1] in _LANG_NAMES:
                    lang = _LANG_NAMES[m[1]]
                    break
        with open(trans, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                utt, sep, text = line.rstrip("\n").partition("\t")
                parts = utt.split("_")
                if not sep or len(parts) != 3 or not all(p.isalnum() for p in parts):
                    raise ConfigError(f"{trans}:{lineno}: expected 'SPEAKER_BOOK_SEQ<TAB>TEXT'")
                folder = trans.parent / "audio" / parts[0] / parts[1]
                audio = next((folder / f"{utt}{e}" for e in opts.audio_exts if (folder / f"{utt}{e}").is_file()),
                             folder / f"{utt}{opts.audio_exts[0]}")
                out.append(Entry(_posix_rel(audio, root), str(audio.resolve()), lang=lang, text=text.strip() or None))
    return out


_URL_READERS: dict[str, Callable[..., list[Entry]]] = {
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


def read_entries(manifest: SourceManifest, manifest_path: Path, *, cache_dir: Path | None = None,
                 materialize: bool = True) -> list[Entry]:
    """The recordings of a runnable manifest as entries, in the reader's order.

    Raises ConfigError (naming file, line or option) for a catalog-only manifest, a bad listing,
    a glob that matches nothing, duplicate keys, or a source that lists no audio.
    ``materialize=False`` lists Parquet/WebDataset audio without writing it (for audits).
    """
    manifest_path = Path(manifest_path).resolve()
    require_runnable(manifest, manifest_path)
    opts = reader_options(manifest, manifest_path)
    ctx = _Ctx(manifest.name, manifest_path, manifest_path.parent,
               _cache_for(manifest, manifest_path, opts, cache_dir), materialize)
    reader = manifest.effective_reader
    if manifest.audio is not None:
        entries = _read_glob(ctx, manifest.audio, opts)
    elif manifest.listing is not None:
        listing = ctx.base / manifest.listing
        entries = (read_tsv if reader == "tsv" else read_jsonl)(ctx, listing, opts)
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
            entries = (read_tsv if reader == "tsv" else read_jsonl)(ctx, listing, opts, base=root)
        else:
            entries = _URL_READERS[reader](ctx, target, opts)
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e.key in seen:
            raise ConfigError(f"{manifest_path}: {e.key!r} listed twice by reader {reader!r}")
        seen[e.key] = i
    if not entries:
        raise ConfigError(f"{manifest_path}: the source lists no audio")
    return entries
