"""Corpus-tree readers: Libri-Light, LibriSpeech and Multilingual LibriSpeech layouts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pydantic import Field

from granary_pipe.config import ConfigError, read_utf8, utf8_lines
from granary_pipe.ingest.readers_base import Entry, UrlReader, _Ctx, _match_files, _Options, _posix_rel, _root_dir

_LANG_NAMES = {"english": "en", "german": "de", "dutch": "nl", "french": "fr", "spanish": "es",
               "italian": "it", "portuguese": "pt", "polish": "pl"}
"""Language names the LibriVox-derived layouts (Libri-Light JSON, ``mls_<language>``) use."""


class LibriLightOptions(_Options):
    pattern: str = "**/*.flac"


class LibriSpeechOptions(_Options):
    pass


class MlsOptions(_Options):
    audio_exts: list[str] = Field(default_factory=lambda: [".flac", ".opus", ".wav"])


def read_librilight(ctx: _Ctx, target: Path, opts: LibriLightOptions) -> list[Entry]:
    """Libri-Light ``subset/speaker/book/*.flac`` (+ ``*.json`` metadata, optional); no text."""
    root = _root_dir(target, "librilight")
    out = []
    for flac in _match_files(ctx, root, [opts.pattern]):
        lang = opts.lang
        meta_path = flac.with_suffix(".json")
        if meta_path.is_file():
            try:
                meta = json.loads(read_utf8(meta_path))
            except json.JSONDecodeError as exc:
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
    for trans in _match_files(ctx, root, ["**/*.trans.txt"]):
        for lineno, line in utf8_lines(trans):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            if not text or not re.match(r"^[\w-]+$", utt):
                raise ConfigError(f"{trans}:{lineno}: expected 'UTTERANCE-ID TEXT'")
            texts[Path(os.path.realpath(trans.parent / f"{utt}.flac"))] = text.strip()
    audio = {Path(os.path.realpath(p)) for p in _match_files(ctx, root, ["**/*.flac"])} | set(texts)
    lang = opts.lang or "en"
    return [Entry(_posix_rel(p, root), str(p), lang=lang, text=texts.get(p)) for p in sorted(audio)]


def read_mls(ctx: _Ctx, target: Path, opts: MlsOptions) -> list[Entry]:
    """Multilingual LibriSpeech: ``split/transcripts.txt`` + ``split/audio/speaker/book/utt.EXT``."""
    root = _root_dir(target, "mls")
    out = []
    for trans in _match_files(ctx, root, ["**/transcripts.txt"]):
        lang = opts.lang
        if lang is None:
            for part in reversed(trans.resolve().parts):
                m = re.match(r"^mls_([a-z]+)", part)
                if m and m[1] in _LANG_NAMES:
                    lang = _LANG_NAMES[m[1]]
                    break
        for lineno, line in utf8_lines(trans):
            if not line.strip():
                continue
            utt, sep, text = line.rstrip("\n").partition("\t")
            parts = utt.split("_")
            if not sep or len(parts) != 3 or not all(p.isalnum() for p in parts):
                raise ConfigError(f"{trans}:{lineno}: expected 'SPEAKER_BOOK_SEQ<TAB>TEXT'")
            folder = trans.parent / "audio" / parts[0] / parts[1]
            audio = next((folder / f"{utt}{e}" for e in opts.audio_exts if (folder / f"{utt}{e}").is_file()),
                         folder / f"{utt}{opts.audio_exts[0]}")
            real = ctx.confine(audio, root, f"{trans}:{lineno}", shown=_posix_rel(audio, root))
            out.append(Entry(_posix_rel(audio, root), str(real), lang=lang, text=text.strip() or None,
                             where=f"{trans}:{lineno}"))
    return out


URL_READERS: dict[str, tuple[type[_Options], UrlReader]] = {
    "librilight": (LibriLightOptions, read_librilight), "librispeech": (LibriSpeechOptions, read_librispeech),
    "mls": (MlsOptions, read_mls)}
