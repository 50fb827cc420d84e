"""Language ID of text: fastText ``lid.176`` behind one small interface, for the ASR stage,
``filter.text_lang`` and the translation filters. The model is the registry's ``fasttext-lid176``
(checked by sha256) or a path."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

LanguageProbs = Callable[[str], dict[str, float]]
"""Text → probability per language code (the top few)."""

FASTTEXT_CODES = {"jw": "jv"}
"""Whisper codes that fastText's lid.176 spells differently."""

SAME_LANGUAGE: tuple[tuple[str, ...], ...] = (("hr", "sr", "bs", "sh"), ("no", "nb", "nn"), ("jw", "jv"))
"""Groups of codes that name one language (the first one stands for the group)."""


class FastTextLID:
    """fastText language ID (``lid.176``): text → top-``k`` language probabilities."""

    def __init__(self, path: str | Path, k: int = 5) -> None:
        import fasttext

        self.model = fasttext.load_model(str(path))
        self.k = k

    def __call__(self, text: str) -> dict[str, float]:
        """Top-``k`` languages of ``text`` (one line; fasttext-predict's list form has no probabilities)."""
        labels, probs = self.model.predict(" ".join(text.split()), k=self.k)
        return {label.removeprefix("__label__"): float(p) for label, p in zip(labels, probs, strict=True)}


def load(name_or_path: str, k: int = 5) -> FastTextLID:
    """The fastText model ``name_or_path`` (a registry name or a path), giving its top ``k`` languages."""
    from granary_pipe import models

    return FastTextLID(models.resolve(name_or_path), k=k)


def top_language(lid: LanguageProbs, text: str) -> tuple[str, float]:
    """The most likely language of ``text`` and its probability (``("und", 0.0)`` when none)."""
    return next(iter(lid(text).items()), ("und", 0.0))


def lid_prob(lid: LanguageProbs, text: str, lang: str) -> float:
    """Probability that language ID gives ``lang`` (a Whisper code) for ``text``."""
    return lid(text).get(FASTTEXT_CODES.get(lang, lang), 0.0)


def canonical(code: str, groups: Iterable[Iterable[str]] = SAME_LANGUAGE) -> str:
    """One code per group of codes that name one language (hr/sr/bs, no/nb/nn, jw/jv)."""
    return next((group[0] for group in map(list, groups) if code in group), code)
