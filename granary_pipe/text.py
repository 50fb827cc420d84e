"""The project's one text normalisation: every comparison of two texts goes through :func:`normalize`
(Whisper's normalisers, numbers in one written form per language); :func:`fold` is its character step.
Design, and what is not handled: docs/architecture.md, "After the run"."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache

UNSPACED_LANGS = ("zh", "ja", "th", "lo", "km", "my", "bo", "yue")
"""Languages written without spaces between words: texts compare by character there."""

APOSTROPHES = "'’ʼ‘`´"
"""Characters written as an apostrophe; all read as ``'``."""

TEXT2NUM_LANGS = ("fr", "es", "pt", "it", "de", "nl", "da")
"""Languages whose spelled-out numbers ``text2num`` turns into digits."""

COMMA_DECIMAL_EXCEPT = ("en", "zh", "yue", "ja", "ko", "th", "he", "hi")
"""Languages that write the decimal point as ``.`` (elsewhere a comma between digits is one)."""

NUM2WORDS_CODES = {"nb": "no", "nn": "no", "kk": "kz"}
"""Whisper language codes that num2words spells differently."""

NUM2WORDS_BROKEN = ("am",)
"""num2words languages not used: Amharic fails on 6-digit numbers and does not return on 9 (0.5.14)."""

CURRENCY_SIGNS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY"}
"""Currency signs read as the currency's name (from num2words' ``CURRENCY_FORMS``)."""

_APOSTROPHE_TABLE = str.maketrans({ch: "'" for ch in APOSTROPHES})
_ROMANIAN = str.maketrans({"ş": "ș", "ţ": "ț", "Ş": "ș", "Ţ": "ț"})
_SPACE_GROUP = re.compile(r"(?<=\d)[ \u00a0\u202f](?=\d{3}(?!\d|[.,]\d))")
_DOT_GROUP = re.compile(r"(?<=\d)\.(?=\d{3}(?!\d))")
_COMMA_GROUP_EN = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_COMMA_RUN = re.compile(r"\d+(?:,\d+){2,}")
_ORDINALS = {
    "fr": (re.compile(r"\b(\d+)(?:ers?|res?|ères?|eres?|èmes?|emes?|è|e|nde?s?|d)\b"), r"\1e"),
    "es": (re.compile(r"\b(\d+)\.?(?:o|os|er|ero|ros|ᵒ)\b"), r"\1o"),
    "pt": (re.compile(r"\b(\d+)\.?(?:o|os|ᵒ)\b"), r"\1o"),
    "it": (re.compile(r"\b(\d+)\.?(?:o|i|ᵒ)\b"), r"\1o"),
    "nl": (re.compile(r"\b(\d+)(?:e|ste|de)\b"), r"\1e"),
}
_ORDINALS_FEMININE = re.compile(r"\b(\d+)\.?(?:a|as|era|eras|ᵃ)\b")
_CURRENCY = re.compile(r"([€$£¥])\s?(\d+(?:[.,]\d+)*)|(\d+(?:[.,]\d+)*)\s?([€$£¥])")
_CLAUSE = re.compile(r"[,;:!?…]+(?!\d)|(?<!\d)[,;:!?…]+|\.+(?!\d)")
"""Where English is cut before Whisper's normaliser, which reads the list ``one, two, three`` as ``123``."""
_CUT = "qxclausecutqx"
"""The word that marks a cut for Whisper's normaliser (no number, no spelling of its), then dropped."""
_CJK_NUMERAL = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")


def base_lang(lang: str | None) -> str | None:
    """``pt`` of ``pt-BR``/``pt_BR``/``PT``; None for None or empty."""
    if not lang:
        return None
    return re.split(r"[-_]", lang.strip().lower(), maxsplit=1)[0] or None


def fold(text: str | None) -> str:
    """The character step: NFKC, casefold, apostrophes as ``'``, Romanian s/t-cedilla → s/t-comma."""
    if not text:
        return ""
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHE_TABLE).casefold().translate(_ROMANIAN)


def strip_symbols(text: str, keep: str = "") -> str:
    """Punctuation and symbols (Unicode P*, S*) → a space, except those in ``keep`` and a ``.``
    between two digits; whitespace collapsed. Marks (M*) stay: they are letters' parts."""
    out = []
    for i, ch in enumerate(text):
        if ch in keep or unicodedata.category(ch)[0] not in "PS":
            out.append(ch)
        elif ch == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
            out.append(ch)
        else:
            out.append(" ")
    return " ".join("".join(out).split())


@lru_cache(maxsize=1)
def _english():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@lru_cache(maxsize=None)
def _num2words_lang(lang: str) -> str | None:
    from num2words import CONVERTER_CLASSES

    code = NUM2WORDS_CODES.get(lang, lang)
    return code if code in CONVERTER_CLASSES and code not in NUM2WORDS_BROKEN else None


def _currency_word(sign: str, amount: str, lang: str) -> str:
    """The currency's name for ``amount`` in ``lang`` (num2words' forms), else the sign itself."""
    from num2words import CONVERTER_CLASSES

    code = _num2words_lang(lang)
    conv = CONVERTER_CLASSES.get(code) if code else None
    if conv is None:
        return sign
    forms = (getattr(conv, "CURRENCY_FORMS", None) or {}).get(CURRENCY_SIGNS[sign])
    if not forms:
        return sign
    names = forms[0]
    try:
        n = int(Decimal(amount))
    except (InvalidOperation, ValueError):
        n = 2
    if len(names) > 2 and hasattr(conv, "pluralize"):
        try:
            return conv.pluralize(n, names)
        except Exception:  # a converter's pluralize with another signature: the plural
            return names[-1]
    return names[0] if n == 1 else names[-1]


def _numbers(text: str, lang: str) -> str:
    """One written form of the numbers of a (case-folded) text in ``lang``."""
    if lang in TEXT2NUM_LANGS:
        from text_to_num import alpha2digit

        if lang == "es":
            text = re.sub(r"\bveintiún\b", "veintiuno", text)  # as whisper-normalizer's Spanish
        text = unicodedata.normalize("NFKC", alpha2digit(text, lang, threshold=0))  # its 1º → 1o
    elif lang in ("zh", "yue"):
        from whisper_normalizer.international import ChineseTextNormalizer

        text = _CJK_NUMERAL.sub(ChineseTextNormalizer._number, text)
    text = _SPACE_GROUP.sub("", text)
    if lang not in COMMA_DECIMAL_EXCEPT:
        text = _DECIMAL_COMMA.sub(".", _DOT_GROUP.sub("", text))
    else:
        text = _COMMA_GROUP_EN.sub("", text)
    if lang in _ORDINALS:
        pattern, repl = _ORDINALS[lang]
        text = pattern.sub(repl, text)
        if lang in ("es", "pt", "it"):
            text = _ORDINALS_FEMININE.sub(r"\1a", text)
    text = _CURRENCY.sub(lambda m: _currency(m, lang), text)
    if lang not in TEXT2NUM_LANGS and lang not in ("zh", "yue"):
        code = _num2words_lang(lang)
        if code is not None:
            text = _NUMBER.sub(lambda m: _spell(m.group(0), code), text)
    return text


def _currency(m: re.Match, lang: str) -> str:
    sign, amount = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
    return f" {amount} {_currency_word(sign, amount.replace(',', '.'), lang).casefold()} "


MAX_SPELLED_DIGITS = 12
"""Longer digit strings (phone numbers, identifiers; some num2words languages loop on them) stay digits."""


def _spell(number: str, code: str) -> str:
    from num2words import num2words

    whole, _, frac = number.partition(".")
    if len(whole) > MAX_SPELLED_DIGITS or len(frac) > MAX_SPELLED_DIGITS:
        return number
    try:
        return " " + num2words(Decimal(number) if "." in number else int(number), lang=code) + " "
    except Exception:  # a number num2words cannot say in that language (too large, ...): as written
        return number


def normalize(text: str | None, lang: str | None = None) -> str:
    """``text`` as every comparison sees it in language ``lang``; "" for None. ``lang`` None (not
    known) gets the basic normalisation with no number mapping."""
    if not text:
        return ""
    return _normalize(text, base_lang(lang))


def _number_list(m: re.Match) -> str:
    """``2,3,4,10`` as the list ``2, 3, 4, 10`` (Whisper writes counting so), unless it reads as thousands."""
    groups = m.group(0).split(",")
    if len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
        return m.group(0)
    return ", ".join(groups)


@lru_cache(maxsize=8192)
def _normalize(text: str, lang: str | None) -> str:
    text = _COMMA_RUN.sub(_number_list, text)
    if lang == "en":
        text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHE_TABLE)
        text = text.replace("[", " ").replace("]", " ").replace("(", " ").replace(")", " ")
        return " ".join(w for w in _english()(_CLAUSE.sub(f" {_CUT} ", text)).split() if w != _CUT)
    text = fold(text)
    if lang is not None:
        text = _numbers(text, lang)
    return strip_symbols(text)


def tokens(text: str | None, lang: str | None) -> list[str]:
    """:func:`normalize`'s words of ``text``, or its characters in a language written without spaces."""
    norm = normalize(text, lang)
    return list(norm.replace(" ", "")) if base_lang(lang) in UNSPACED_LANGS else norm.split()


def edit_distance(ref: list | str, hyp: list | str) -> int:
    """Levenshtein distance between two sequences (substitutions, insertions, deletions)."""
    from rapidfuzz.distance.Levenshtein import distance

    return distance(ref, hyp)


def error_rate(ref: str | None, hyp: str | None, lang: str | None = None, by_char: bool | None = None,
               cer_below_words: int = 0) -> float:
    """WER of ``hyp`` against ``ref`` after :func:`normalize` in ``lang``: CER with ``by_char`` (by default
    for a language written without spaces), and when both texts have fewer than ``cer_below_words`` words,
    where a word rate is all or nothing. Both empty → 0.0; only ``ref`` empty → 1.0."""
    r, h = normalize(ref, lang), normalize(hyp, lang)
    if by_char is None:
        by_char = base_lang(lang) in UNSPACED_LANGS
    by_char = by_char or max(len(r.split()), len(h.split())) < cer_below_words
    rs, hs = (list(r.replace(" ", "")), list(h.replace(" ", ""))) if by_char else (r.split(), h.split())
    if not rs:
        return 0.0 if not hs else 1.0
    return edit_distance(rs, hs) / len(rs)
