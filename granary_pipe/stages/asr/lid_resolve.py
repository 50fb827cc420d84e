"""Resolve an uncertain spoken-language ID by decoding candidate languages instead of rejecting the recording.
Design: docs/architecture.md, "Data flow" (asr.language_id)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from granary_pipe import text_lid
from granary_pipe.stages.asr import whisper_runtime


class LidResolve(BaseModel):
    """Options of language-ID resolution (:mod:`granary_pipe.stages.asr.lid_resolve`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false: reject a recording under min_prob (lang:low_confidence)")
    min_margin: float = Field(default=0.3, ge=0, le=1,
                              description="resolve when the runner-up is this close to the top")
    candidates: int = Field(default=3, ge=1, le=10, description="top audio languages tried")
    min_candidate_prob: float = Field(default=0.02, ge=0, le=1, description="audio probability a candidate needs")
    windows: int = Field(default=2, ge=1, le=16, description="longest language-ID windows each candidate decodes")
    min_letters: int = Field(default=12, ge=0,
                             description="text language ID judges only hypotheses with this many letters")
    min_text_prob: float = Field(default=0.5, ge=0, le=1,
                                 description="text language ID this sure of another language disagrees")
    min_switch_margin: float = Field(default=0.3, ge=0, description="another language must decode this much better "
                                     "(mean token log-probability) to replace the audio's first choice")
    min_avg_logprob: float = Field(default=-1.5,
                                   description="the winner's mean token log-probability (greedy) must reach this")
    max_new_tokens: int = Field(default=96, ge=1, description="tokens decoded per window and candidate")


@lru_cache(maxsize=1)
def whisper_langs() -> frozenset[str]:
    """Language codes of multilingual Whisper (``en``, ``de``, ..., ``yue``)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def hint_code(hint: str | None) -> str | None:
    """The Whisper code of a listing's language (``pt-BR`` → ``pt``), or None when Whisper has none."""
    if not hint:
        return None
    code = hint.strip().lower().replace("_", "-").split("-")[0]
    return code if code in whisper_langs() else None


@dataclass
class Decision:
    """The language of one recording and how it was reached."""

    lang: str
    prob: float
    reason: str | None = None
    flags: list[str] = field(default_factory=list)


def needs_resolution(dist: dict[str, float], hint: str | None, opts: LidResolve, min_prob: float) -> bool:
    """True when the audio alone is not enough (top under ``min_prob``, a close runner-up, a contrary hint)."""
    ranked = sorted(dist.values(), reverse=True) + [0.0, 0.0]
    top_lang = max(dist, key=dist.__getitem__)
    return ranked[0] < min_prob or ranked[0] - ranked[1] < opts.min_margin or (
        hint is not None and hint != top_lang)


def candidates(dist: dict[str, float], hint: str | None, opts: LidResolve) -> list[str]:
    """Top audio languages (at least ``min_candidate_prob``), then the hint if not among them."""
    ranked = sorted(dist, key=dist.__getitem__, reverse=True)
    out = [lang for lang in ranked[: opts.candidates] if dist[lang] >= opts.min_candidate_prob] or ranked[:1]
    if hint is not None and hint not in out:
        out.append(hint)
    return out


class TextLID:
    """fastText language ID of a hypothesis, judged only with enough letters."""

    def __init__(self) -> None:
        self._lid = text_lid.load("fasttext-lid176", k=1)

    def disagrees(self, text: str, lang: str, opts: LidResolve) -> bool:
        """True when ``text`` has enough letters (Unicode category L*) and is confidently in a language other
        than ``lang``."""
        if sum(unicodedata.category(ch)[0] == "L" for ch in text) < opts.min_letters:
            return False
        top, prob = text_lid.top_language(self._lid, text)
        return prob >= opts.min_text_prob and text_lid.canonical(top) != text_lid.canonical(lang)


def resolve(dist: dict[str, float], hint: str | None, encoded: list[np.ndarray], model, text_lid: TextLID,
            opts: LidResolve) -> Decision:
    """One recording's language from its averaged audio distribution ``dist``, the listing's ``hint``
    and the encoder outputs of its longest windows."""
    top = max(dist, key=dist.__getitem__)
    credible: dict[str, float] = {}
    flags: list[str] = []
    stacked = np.stack(encoded)
    for lang in candidates(dist, hint, opts):
        hyps = whisper_runtime.transcribe(model, None, lang, beam_size=1, max_new_tokens=opts.max_new_tokens,
                                          encoded=stacked)
        score = whisper_runtime.mean_logprob(hyps)
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
