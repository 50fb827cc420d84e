"""Character normalisation of text the PNC guard accepted: one spelling for the same punctuation.

NFC; every kind of space becomes one plain space; curly quotes become straight (French keeps
guillemets with a no-break space inside); ``…`` and longer dot runs become ``...``; no space before
closing nor after opening punctuation, except French, which puts a no-break space before
``; : ! ?`` (not between digits: ``10:30``).
"""

from __future__ import annotations

import re
import unicodedata

NBSP = "\u00a0"

_QUOTES = str.maketrans({
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
})
_SPACES = re.compile(r"\s+")  # str patterns match Unicode whitespace, U+00A0 and U+202F included
_DOTS = re.compile(r"\.{4,}")
_BEFORE_CLOSING = re.compile(r" +([,.;:!?)\]}])")
_AFTER_OPENING = re.compile(r"([(\[{¿¡]) +")
_BEFORE_CLOSING_FR = re.compile(r" +([,.)\]}])")
_FR_HIGH = re.compile(r"(?<=[^\s;:!?])\s*([;:!?])")  # French "high" punctuation: NBSP before it
_FR_OPEN_GUILLEMET = re.compile(r"«\s*")
_FR_CLOSE_GUILLEMET = re.compile(r"\s*»")


def _french_high(match: re.Match) -> str:
    text, start, end = match.string, match.start(), match.end()
    mark = match.group(1)
    if mark == ":" and start > 0 and end < len(text) and text[start - 1].isdigit() and text[end].isdigit():
        return match.group(0)  # 10:30
    return NBSP + mark


def normalize(text: str, lang: str | None) -> str:
    """``text`` with the punctuation conventions above for language ``lang``."""
    text = unicodedata.normalize("NFC", text).replace("\u2026", "...")
    text = _DOTS.sub("...", text)
    text = _SPACES.sub(" ", text).strip()
    if lang == "fr" and "\u201c" in text:
        text = text.replace("\u201c", "«").replace("\u201d", "»")
    text = text.translate(_QUOTES)
    text = (_BEFORE_CLOSING_FR if lang == "fr" else _BEFORE_CLOSING).sub(r"\1", text)
    text = _AFTER_OPENING.sub(r"\1", text)
    if lang == "fr":
        text = _FR_HIGH.sub(_french_high, text)
        text = _FR_OPEN_GUILLEMET.sub("«" + NBSP, text)
        text = _FR_CLOSE_GUILLEMET.sub(NBSP + "»", text)
    return text
