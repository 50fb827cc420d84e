"""Resolve an uncertain spoken-language ID with evidence instead of rejecting the recording.

Whisper's language head is weakest exactly where corpora need it: clips of one or two seconds,
and closely related languages (Polish heard as Czech, Slovak split between cs/pl/sk). Rather
than reject a recording whose averaged language probability is low, the candidates are tried
(multi-signal agreement, in the manner of OWSM v4's language-ID cleaning):

1. Candidates: the top ``candidates`` languages of the averaged audio distribution with at least
   ``min_candidate_prob``, plus the listing's ``lang`` (a hint) when it names a language Whisper
   knows, whatever its audio probability.
2. Each candidate decodes the recording's longest language-ID windows (greedy, from the encoder
   outputs already computed) with the language forced.
3. fastText reads each hypothesis. A candidate *disagrees* when text with enough letters is
   confidently in another language (Whisper forced to a language it does not hear often
   translates, transliterates or answers in English); text with too few letters (numbers, one
   word) cannot disagree.
4. A candidate whose mean token log-probability is under ``min_avg_logprob`` is not credible
   either (greedy decodes of one- or two-word clips score -1.0 to -1.5 when right; the filters
   judge the final beam-search text again).
5. The listing's language is kept whenever its decode is credible: curated metadata is usually
   right, and the audio only has to not contradict it. Otherwise the audio's first choice stands
   unless another credible candidate decodes clearly better (``min_switch_margin`` of mean token
   log-probability): greedy log-probabilities of different languages are only roughly
   comparable, and a language in another script (Japanese, Thai) can score well on speech it
   does not hear. No credible candidate: the recording is rejected ``lang:no_agreement``.

A recording is resolved this way when its top probability is under ``min_prob``, when the
runner-up is within ``min_margin`` of it (related languages share probability), or when the
listing's language is not the top one. Confident recordings cost nothing extra.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np

from granary_pipe import text_lid
from granary_pipe.stages.asr import whisper_runtime

WHISPER_LANGS: frozenset[str] = frozenset()
"""Language codes Whisper's tokenizer knows (filled on first use)."""


def whisper_langs() -> frozenset[str]:
    """Language codes of multilingual Whisper (``en``, ``de``, ..., ``yue``)."""
    global WHISPER_LANGS
    if not WHISPER_LANGS:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        WHISPER_LANGS = frozenset(_LANGUAGE_CODES)
    return WHISPER_LANGS


def hint_code(hint: str | None) -> str | None:
    """The Whisper code of a listing's language (``pt-BR`` → ``pt``), or None when Whisper has none."""
    if not hint:
        return None
    code = hint.strip().lower().replace("_", "-").split("-")[0]
    return code if code in whisper_langs() else None


def letter_count(text: str) -> int:
    """Letters (Unicode category L*) in ``text``: what language ID of text can judge."""
    return sum(1 for ch in text if unicodedata.category(ch)[0] == "L")


@dataclass(frozen=True)
class ResolveOptions:
    """How uncertain language IDs are resolved (the stage's parameters, see the module doc)."""

    min_prob: float = 0.5
    min_margin: float = 0.3
    candidates: int = 3
    min_candidate_prob: float = 0.02
    windows: int = 2
    min_letters: int = 12
    min_text_prob: float = 0.5
    min_switch_margin: float = 0.3
    min_avg_logprob: float = -1.5
    max_new_tokens: int = 96


@dataclass
class Decision:
    """The language of one recording and how it was reached."""

    lang: str
    prob: float
    reason: str | None = None
    flags: list[str] = field(default_factory=list)


def needs_resolution(dist: dict[str, float], hint: str | None, opts: ResolveOptions) -> bool:
    """True when the audio alone is not enough (low probability, a close runner-up, a contrary hint)."""
    ranked = sorted(dist.values(), reverse=True) + [0.0, 0.0]
    top_lang = max(dist, key=dist.get)
    return ranked[0] < opts.min_prob or ranked[0] - ranked[1] < opts.min_margin or (
        hint is not None and hint != top_lang)


def candidates(dist: dict[str, float], hint: str | None, opts: ResolveOptions) -> list[str]:
    """Top audio languages (at least ``min_candidate_prob``), then the hint if not among them."""
    ranked = sorted(dist, key=dist.get, reverse=True)
    out = [lang for lang in ranked[: opts.candidates] if dist[lang] >= opts.min_candidate_prob] or ranked[:1]
    if hint is not None and hint not in out:
        out.append(hint)
    return out


class TextLID:
    """fastText language ID of a hypothesis, judged only with enough letters."""

    def __init__(self, same_language: list[list[str]] | None = None) -> None:
        self._lid = text_lid.load("fasttext-lid176", k=1)
        self._groups = same_language or text_lid.SAME_LANGUAGE

    def canon(self, code: str) -> str:
        """One code per group of codes that name one language (hr/sr/bs, no/nb/nn, jw/jv)."""
        return text_lid.canonical(code, self._groups)

    def disagrees(self, text: str, lang: str, opts: ResolveOptions) -> bool:
        """True when ``text`` has enough letters and is confidently in a language other than ``lang``."""
        if letter_count(text) < opts.min_letters:
            return False
        top, prob = text_lid.top_language(self._lid, text)
        return prob >= opts.min_text_prob and self.canon(top) != self.canon(lang)


def _score(hyps: list[whisper_runtime.Hypothesis]) -> float:
    """Mean log-probability over the windows, weighted by how much each window said."""
    weights = [max(len(h.text), 1) for h in hyps]
    return float(np.average([h.avg_logprob for h in hyps], weights=weights))


def resolve(dist: dict[str, float], hint: str | None, encoded: list[np.ndarray], model, text_lid: TextLID,
            opts: ResolveOptions) -> Decision:
    """Decide one recording's language from its averaged audio distribution ``dist``, the listing's
    ``hint`` and the encoder outputs of its longest windows (see the module doc)."""
    top = max(dist, key=dist.get)
    credible: dict[str, float] = {}
    flags: list[str] = []
    stacked = np.stack(encoded)
    for lang in candidates(dist, hint, opts):
        hyps = whisper_runtime.transcribe(model, None, lang, beam_size=1, max_new_tokens=opts.max_new_tokens,
                                          encoded=stacked)
        score = _score(hyps)
        if text_lid.disagrees(" ".join(h.text for h in hyps), lang, opts):
            flags.append(f"lang:text_disagrees:{lang}")
        elif score < opts.min_avg_logprob:
            flags.append(f"lang:best_logprob:{lang}")
        else:
            credible[lang] = score
    if not credible:
        return Decision(top, dist[top], "lang:no_agreement", flags)
    anchor = hint if hint is not None else top
    if hint is not None and hint in credible:
        best = hint  # the listing's language stands while its decode is credible
    else:
        best = max(credible, key=lambda lang: (credible[lang], dist.get(lang, 0.0)))
        if anchor in credible and credible[best] < credible[anchor] + opts.min_switch_margin:
            best = anchor  # the audio's first choice stands unless another language decodes clearly better
    flags.append(f"lang:resolved:{top}->{best}" if best != top else "lang:confirmed")
    if best == hint:
        flags.append("lang:hint")
    return Decision(best, dist.get(best, 0.0), None, flags)
