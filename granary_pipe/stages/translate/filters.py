"""Filters on a (source text, translation) pair: pure functions, each rule named.

Words are counted, never compared; in ``UNSPACED_LANGS`` each letter counts as a word.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections import Counter

from granary_pipe.stages.filters.rules import letter_count, word_tokens
from granary_pipe.text import UNSPACED_LANGS
from granary_pipe.text_lid import LanguageProbs, lid_prob

SCRIPTS: dict[str, set[str]] = {  # Unicode script (a character name's first word) → languages written in it
    "CYRILLIC": {"ru", "uk", "bg", "be", "mk", "sr", "kk", "mn", "tg", "tt", "ba", "ky"},
    "ARABIC": {"ar", "fa", "ur", "ps", "sd", "ug"}, "HEBREW": {"he", "yi"}, "DEVANAGARI": {"hi", "mr", "ne", "sa"},
    "BENGALI": {"bn", "as"}, "GREEK": {"el"}, "GURMUKHI": {"pa"}, "GUJARATI": {"gu"}, "TAMIL": {"ta"},
    "TELUGU": {"te"}, "KANNADA": {"kn"}, "MALAYALAM": {"ml"}, "SINHALA": {"si"}, "THAI": {"th"}, "LAO": {"lo"},
    "KHMER": {"km"}, "MYANMAR": {"my"}, "TIBETAN": {"bo"}, "GEORGIAN": {"ka"}, "ARMENIAN": {"hy"},
    "ETHIOPIC": {"am"}, "HANGUL": {"ko"},
}
LATIN = {
    "en", "de", "es", "fr", "it", "pt", "nl", "pl", "cs", "sk", "sl", "hr", "bs", "ro", "hu", "fi",
    "et", "lv", "lt", "sv", "da", "no", "nn", "is", "fo", "ga", "cy", "br", "eu", "ca", "gl", "oc",
    "mt", "sq", "tr", "az", "uz", "tk", "vi", "id", "ms", "tl", "jw", "su", "sw", "so", "ha", "yo",
    "sn", "af", "lb", "la", "mi", "haw", "ln", "mg", "ht",
}


def expected_scripts(lang: str) -> set[str] | None:
    """Unicode script names a language is written in (``{"LATIN"}``); None when unknown."""
    if lang in LATIN:
        return {"LATIN"}
    if lang in ("zh", "yue"):
        return {"CJK"}
    if lang == "ja":
        return {"CJK", "HIRAGANA", "KATAKANA"}
    found = {script for script, langs in SCRIPTS.items() if lang in langs}
    if lang == "ko":
        found.add("CJK")
    return found or None


def words(text: str, lang: str | None = None) -> list[str]:
    """Words of ``text`` (letters one by one for languages written without spaces)."""
    if lang in UNSPACED_LANGS:
        return [ch for ch in text if ch.isalnum()]
    return [w for w in text.split() if any(ch.isalnum() for ch in w)]


def too_short(src: str, tgt: str, src_lang: str | None, tgt_lang: str | None, min_words: int = 2) -> bool:
    """Either side has fewer than ``min_words`` words."""
    return len(words(src, src_lang)) < min_words or len(words(tgt, tgt_lang)) < min_words


def length_ratio(src: str, tgt: str, src_lang: str | None = None, tgt_lang: str | None = None) -> float:
    """Words of the longer side over words of the shorter (∞ when one side has none)."""
    a, b = len(words(src, src_lang)), len(words(tgt, tgt_lang))
    if min(a, b) == 0:
        return float("inf") if max(a, b) else 1.0
    return max(a, b) / min(a, b)


def script_fraction(text: str, lang: str) -> float | None:
    """Share of the letters of ``text`` in ``lang``'s script; None when the script is unknown."""
    scripts = expected_scripts(lang)
    if scripts is None:
        return None
    letter_scripts = [unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0] for ch in text if ch.isalpha()]
    if not letter_scripts:
        return 0.0
    return sum(script in scripts for script in letter_scripts) / len(letter_scripts)


def compression_ratio(text: str) -> float:
    """UTF-8 bytes over zlib-compressed bytes (Whisper's repetition measure)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def max_ngram_count(text: str, n: int = 4) -> int:
    """How often the most frequent word ``n``-gram occurs (words: ``filters.rules.word_tokens``)."""
    toks = [t.text for t in word_tokens(text)]
    grams = Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    return max(grams.values(), default=0)


def check_pair(src: str, tgt: str, src_lang: str, tgt_lang: str, *, min_words: int = 2,
               max_length_ratio: float = 4.0, min_script_fraction: float = 0.9,
               max_compression_ratio: float | None = 2.4, max_ngram_repeats: int | None = 2,
               lid: LanguageProbs | None = None,
               min_lid_prob: float = 0.3, min_lid_letters: int = 20) -> list[str]:
    """The rules the pair breaks, in order: ``too_short``, ``length_ratio``, ``charset`` (the translation's
    letters in its script), ``repetitive`` (zlib ratio or a repeated word 4-gram), ``src_lang``/``tgt_lang``
    (fastText's prob of the expected language, on a side with ``min_lid_letters`` letters)."""
    fired = []
    if too_short(src, tgt, src_lang, tgt_lang, min_words):
        fired.append("too_short")
    if length_ratio(src, tgt, src_lang, tgt_lang) >= max_length_ratio:
        fired.append("length_ratio")
    frac = script_fraction(tgt, tgt_lang)
    if frac is not None and frac < min_script_fraction and (letter_count(tgt) or letter_count(src)):
        fired.append("charset")
    if (max_compression_ratio is not None and compression_ratio(tgt) > max_compression_ratio) or (
            max_ngram_repeats is not None and max_ngram_count(tgt) > max_ngram_repeats):
        fired.append("repetitive")
    if lid is not None:
        for rule, text, lang in (("src_lang", src, src_lang), ("tgt_lang", tgt, tgt_lang)):
            if letter_count(text) >= max(min_lid_letters, 1) and lid_prob(lid, text, lang) <= min_lid_prob:
                fired.append(rule)
    return fired

