"""Frequent hallucination phrases per language: the ``{lang}.txt`` lists (one phrase a line, ``#``
comments) and matching a text normalised in each list's language. Design: docs/architecture.md, "Data flow"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from granary_pipe.text import normalize

_TAB_COUNT = re.compile(r"\t\s*\d+\s*$")
_COUNT = re.compile(r"\s+\d+\s*$")
_INLINE_COMMENT = re.compile(r"\s+#.*$")


def bundled_dir() -> Path:
    """The directory of the hallucination phrase lists shipped in the package (``_data/hallucinations``)."""
    return Path(str(resources.files("granary_pipe") / "_data" / "hallucinations"))


def parse_phrases(text: str, lang: str | None = None) -> list[str]:
    """Phrases of a list file's content normalised in ``lang``: comments stripped, and trailing counts (of
    published frequency lists) after a tab, or after spaces when most lines end in one."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            lines.append(_TAB_COUNT.sub("", _INLINE_COMMENT.sub("", line)).strip())
    counted = sum(1 for line in lines if _COUNT.search(line)) * 2 > len(lines)
    phrases = (normalize(_COUNT.sub("", line) if counted else line, lang) for line in lines)
    return list(dict.fromkeys(p for p in phrases if p))


@dataclass(frozen=True)
class PhraseList:
    """Phrases of one language (normalised in it) as whole-text and prefix matchers."""

    lang: str
    whole: frozenset[str]
    prefixes: tuple[str, ...]  # shortest first


def match_whole(lists: tuple[PhraseList, ...], text: str | None) -> tuple[str, bool] | None:
    """(the phrase ``text`` matches, whether it is the whole text), or None; ``text`` is normalised in
    each list's language in turn."""
    for part in lists:
        norm = normalize(text, part.lang)
        if not norm:
            continue
        if norm in part.whole:
            return norm, True
        for p in part.prefixes:
            if norm.startswith(p + " "):
                return p, False
    return None


@lru_cache(maxsize=256)
def load_lang(lang: str, directory: str | None = None) -> tuple[str, ...]:
    """Phrases of ``{directory}/{lang}.txt`` (bundled dir by default) normalised in ``lang``; () if none."""
    base = Path(directory) if directory else bundled_dir()
    path = base / f"{lang}.txt"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", lang) or not path.is_file():
        return ()
    return tuple(parse_phrases(path.read_text(encoding="utf-8"), lang))


@lru_cache(maxsize=256)
def for_langs(langs: tuple[str, ...], directory: str | None, prefix_min_words: int) -> tuple[PhraseList, ...]:
    """The lists of ``langs`` that have phrases, in order; phrases of ``prefix_min_words`` words or more also
    match as a prefix at a word boundary (cached per worker)."""
    out = []
    for lang in langs:
        phrases = load_lang(lang, directory)
        prefixes = sorted({p for p in phrases if len(p.split()) >= prefix_min_words}, key=len)
        if phrases:
            out.append(PhraseList(lang, frozenset(phrases), tuple(prefixes)))
    return tuple(out)
