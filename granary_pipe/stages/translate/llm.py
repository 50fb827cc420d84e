"""``translate.llm``: LLM translation, X→En and En→X, with an EuroLLM-Instruct style prompt, greedy, filtered."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, PrivateAttr, field_validator

from granary_pipe import llm
from granary_pipe.llm import Backend, BackendOptions, Messages, VllmOptions
from granary_pipe.llm.stage import LLMStageMixin
from granary_pipe.registry import register
from granary_pipe.stages.translate.base import Result, TranslationStage


def prompt(text: str, src: str, tgt: str) -> str:
    """EuroLLM-9B-Instruct's translation prompt, with full language names."""
    s, t = llm.language_name(src), llm.language_name(tgt)
    return f"Translate the following {s} source text to {t}:\n{s}: {text}\n{t}: "


def messages(text: str, src: str, tgt: str) -> Messages:
    """The one-turn conversation asking to translate ``text`` from ``src`` to ``tgt`` (see :func:`prompt`)."""
    return [{"role": "user", "content": prompt(text, src, tgt)}]


def clean_translation(text: str | None, tgt: str) -> str | None:
    """Whitespace collapsed, and an echoed ``German:`` label at the start removed."""
    if text is None:
        return None
    text = " ".join(text.split())
    label = f"{llm.language_name(tgt)}:"
    if text.startswith(label):
        text = text[len(label):].lstrip()
    return text


@register("translate.llm")
class LLMTranslate(LLMStageMixin, TranslationStage):
    """Fills ``translation``/``translation_lang`` where the translation passes the filters."""

    actor = True
    DEFAULT_MODEL: ClassVar[str] = "eurollm-9b-instruct"

    backend: BackendOptions = Field(default_factory=VllmOptions, description="vllm | openai | transformers")
    targets: dict[str, str] = Field(default_factory=lambda: {"en": "de", "default": "en"},
                                    description="source language → target language; 'default' for the rest")
    max_new_tokens: int = Field(1024, ge=1, description="cap; each batch asks for 16 + 2 × its longest text in chars")
    batch_size: int = 256

    _backend: Backend | None = PrivateAttr(None)

    @field_validator("targets")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        codes = {c for c in value if c != "default"} | set(value.values())
        unknown = sorted(codes - set(llm.LANGUAGE_NAMES))
        if unknown:
            raise ValueError(f"unknown language codes {unknown}")
        return value

    def target_for(self, lang: str | None) -> str | None:
        """Target language of a row in ``lang`` (None: not translated)."""
        if not lang or lang not in llm.LANGUAGE_NAMES:
            return None
        tgt = self.targets.get(lang, self.targets.get("default"))
        return tgt if tgt != lang else None

    def models(self) -> list[str]:
        return self._model_refs() + self.declared_models([])

    def setup(self) -> None:
        self.setup_filters()
        self._engine()

    def process(self, active: pa.Table) -> pa.Table:
        self.setup_filters()
        self._engine()
        texts = active.column("text").to_pylist()
        langs = active.column("lang").to_pylist()
        todo = [(i, src, tgt) for i, (text, src) in enumerate(zip(texts, langs, strict=True))
                if text and text.strip() and (tgt := self.target_for(src))]
        if not todo:
            return active
        prompts = [messages(texts[i], src, tgt) for i, src, tgt in todo]
        budget = min(self.max_new_tokens, 16 + 2 * max(len(texts[i]) for i, _, _ in todo))
        outputs = self._generate(prompts, budget)
        results: dict[int, Result] = {
            i: (src, tgt, clean_translation(out, tgt)) for (i, src, tgt), out in zip(todo, outputs, strict=True)
        }
        return self.gate(active, results)

    def run_info(self) -> dict[str, Any]:
        info = self._backend_info()
        return {
            "translation": f"LLM ({info['model']} via {info['name']}), greedy, EuroLLM-Instruct prompt",
            "backend": info,
            "targets": dict(self.targets),
            "filters": self.filter_info(),
        }
