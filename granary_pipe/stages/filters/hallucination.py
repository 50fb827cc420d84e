"""``filter.hallucination``: every known text-level hallucination rule, each named and tunable (``null``
turns a rule off; missing decoder scores never fire). Design: docs/architecture.md, "Data flow"."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from granary_pipe.registry import register
from granary_pipe.stages.filters import phrases as phrase_lists
from granary_pipe.stages.filters import rules
from granary_pipe.stages.filters.base import FilterStage
from granary_pipe.text import UNSPACED_LANGS

RULE_ORDER = (
    "hallucination:phrase",
    "hallucination:phrase_trusted",
    "hallucination:ngram_loop",
    "hallucination:repeated_ngrams",
    "hallucination:long_word",
    "hallucination:char_rate_high",
    "hallucination:char_rate_low",
    "decoder:compression_ratio",
    "decoder:avg_logprob")


@register("filter.hallucination")
class HallucinationFilter(FilterStage):
    """Rejects Whisper hallucinations: known phrases, loops, garbage words, odd rates, bad scores."""

    RULES: ClassVar[tuple[str, ...]] = RULE_ORDER
    FLAG_ONLY: ClassVar[tuple[str, ...]] = ("hallucination:phrase_trusted",)
    COLUMNS: ClassVar[tuple[str, ...]] = ("text", "lang", "duration_s", "avg_logprob", "compression_ratio",
                                          "no_speech_prob")

    # 1. phrases
    phrases: bool = Field(True, description="check the frequent-phrase lists")
    phrase_dir: str | None = Field(None, description="directory of {lang}.txt lists; default: bundled")
    phrase_extra_langs: list[str] = Field(["en"], description="lists checked for rows of every language")
    min_prefix_phrase_words: int = Field(4, ge=1, description="phrases this long also match as a prefix")
    min_trusted_phrase_avg_logprob: float | None = Field(
        -0.4, description="a short whole-text phrase decoded at least this surely is only flagged; None: never")
    max_trusted_phrase_no_speech_prob: float = Field(
        0.1, ge=0, le=1, description="no-speech probability a trusted phrase may have at most")
    max_trusted_phrase_words: int = Field(3, ge=0, description="longer phrases are never trusted")
    # 2. n-gram loops (MOSEL)
    max_short_loop_words: int = Field(2, ge=1, description="short patterns are 1..this many words")
    min_short_loop_repeats: int | None = Field(4, ge=2, description="occurrences in a row of a short pattern")
    max_long_loop_words: int = Field(5, ge=1, description="long patterns are max_short_loop_words+1..this many words")
    min_long_loop_repeats: int | None = Field(2, ge=2, description="occurrences in a row of a long pattern")
    # 3. repeated n-grams (Granary)
    max_unique_word_ratio: float | None = Field(0.4, ge=0, le=1, description="distinct words / words")
    min_unique_ratio_words: int = Field(6, ge=1, description="shorter texts are not judged")
    # 4. long word
    min_long_word_chars: int | None = Field(25, ge=1, description="a word this long fires")
    min_long_word_chars_by_lang: dict[str, int] = Field(
        default_factory=lambda: {lang: 40 for lang in rules.COMPOUNDING_LANGS},
        description="per-language override of min_long_word_chars")
    min_long_word_ratio: float | None = Field(3.0, gt=1, description="longest ≥ this × second-longest fires")
    min_long_word_ratio_chars: int = Field(20, ge=1, description="relative check only for words this long")
    long_word_ratio_off_langs: list[str] = Field(default_factory=lambda: list(rules.COMPOUNDING_LANGS),
                                                 description="compounding languages: no relative long-word check")
    unspaced_langs: list[str] = Field(default_factory=lambda: list(UNSPACED_LANGS),
                                      description="no word rules (no spaces between words)")
    # 5. character rate
    max_chars_per_s: float | None = Field(40.0, gt=0, description="non-space chars per second")
    max_chars_per_s_by_lang: dict[str, float] = Field(
        default_factory=lambda: {"zh": 15.0, "yue": 15.0, "ja": 20.0, "ko": 25.0},
        description="per-language override of max_chars_per_s")
    min_chars_per_s: float | None = Field(1.0, ge=0, description="for texts with any characters")
    # 6-7. decoder scores
    max_compression_ratio: float | None = Field(
        2.4, gt=0, description="gzip compression ratio above which text loops (None: off)")
    min_avg_logprob: float | None = Field(
        -1.0, description="mean token log-probability below which the decoder was unsure (None: off)")
    batch_size: int = 1024

    def _phrases(self, lang: str | None) -> tuple[phrase_lists.PhraseList, ...]:
        langs = tuple(dict.fromkeys(([lang] if lang else []) + list(self.phrase_extra_langs)))
        return phrase_lists.for_langs(langs, self.phrase_dir, self.min_prefix_phrase_words)

    def _trusted(self, row: dict[str, Any], phrase: str, whole: bool) -> bool:
        """A short phrase that is the whole text, decoded surely on speech ("Thank you.", "Gracias")."""
        lp, nsp = row.get("avg_logprob"), row.get("no_speech_prob")
        return (self.min_trusted_phrase_avg_logprob is not None and lp is not None and nsp is not None
                and whole and len(phrase.split()) <= self.max_trusted_phrase_words
                and lp >= self.min_trusted_phrase_avg_logprob and nsp <= self.max_trusted_phrase_no_speech_prob)

    def _loop_ranges(self) -> list[tuple[int, int, int]]:
        out = []
        if self.min_short_loop_repeats is not None:
            out.append((1, self.max_short_loop_words, self.min_short_loop_repeats))
        if self.min_long_loop_repeats is not None:
            out.append((self.max_short_loop_words + 1, self.max_long_loop_words, self.min_long_loop_repeats))
        return out

    def rules(self, row: dict[str, Any]) -> list[str]:
        text, lang = row.get("text") or "", row.get("lang")
        fired = self._phrase_rules(row, text, lang)
        if lang not in self.unspaced_langs:
            fired += self._word_rules(text, lang)
        return fired + self._rate_rules(text, lang, row.get("duration_s")) + self._decoder_rules(row)

    def _phrase_rules(self, row: dict[str, Any], text: str, lang: str | None) -> list[str]:
        found = phrase_lists.match_whole(self._phrases(lang), text) if self.phrases else None
        if found is None:
            return []
        return ["hallucination:phrase_trusted" if self._trusted(row, *found) else "hallucination:phrase"]

    def _word_rules(self, text: str, lang: str | None) -> list[str]:
        fired = []
        tokens = rules.word_tokens(text)
        ws = [t.text for t in tokens]
        if rules.ngram_loop(ws, self._loop_ranges()):
            fired.append("hallucination:ngram_loop")
        max_ratio = self.max_unique_word_ratio
        if max_ratio is not None and rules.repeated_ngrams(ws, max_ratio, self.min_unique_ratio_words):
            fired.append("hallucination:repeated_ngrams")
        min_chars = self.min_long_word_chars
        if min_chars is not None and lang is not None:
            min_chars = self.min_long_word_chars_by_lang.get(lang, min_chars)
        ratio = None if lang in self.long_word_ratio_off_langs else self.min_long_word_ratio
        lengths = [t.length for t in tokens if t.length is not None]
        if rules.long_word(lengths, min_chars, ratio, self.min_long_word_ratio_chars):
            fired.append("hallucination:long_word")
        return fired

    def _rate_rules(self, text: str, lang: str | None, duration_s: float | None) -> list[str]:
        rate = rules.char_rate(text, duration_s)
        if rate is None:
            return []
        fired = []
        high = self.max_chars_per_s
        if high is not None and lang is not None:
            high = self.max_chars_per_s_by_lang.get(lang, high)
        if high is not None and rate > high:
            fired.append("hallucination:char_rate_high")
        if self.min_chars_per_s is not None and rate < self.min_chars_per_s:
            fired.append("hallucination:char_rate_low")
        return fired

    def _decoder_rules(self, row: dict[str, Any]) -> list[str]:
        fired = []
        lp, cr = row.get("avg_logprob"), row.get("compression_ratio")
        if self.max_compression_ratio is not None and cr is not None and cr > self.max_compression_ratio:
            fired.append("decoder:compression_ratio")
        if self.min_avg_logprob is not None and lp is not None and lp < self.min_avg_logprob:
            fired.append("decoder:avg_logprob")
        return fired

