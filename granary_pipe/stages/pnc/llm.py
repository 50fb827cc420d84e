"""``pnc.llm``: punctuation and capitalisation restored by an instruction-tuned LLM, guarded.

Design: docs/architecture.md, "pnc.llm / pnc.none".
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, PrivateAttr, field_validator

from granary_pipe import llm, schema
from granary_pipe.llm import Backend, BackendOptions, Messages, VllmOptions
from granary_pipe.llm.stage import LLMStageMixin
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.pnc import guard
from granary_pipe.stages.pnc.normalize import normalize

PROMPT_DIR = resources.files("granary_pipe") / "_data" / "prompts" / "pnc"


def prompt_template(lang: str, prompt_dir: str | Path | None = None) -> str:
    """The PNC system prompt for ``lang`` (``{lang}.txt``, else ``default.txt``; ``{language}`` not filled in)."""
    root = Path(prompt_dir) if prompt_dir else PROMPT_DIR
    own = root / f"{lang}.txt"
    return (own if own.is_file() else root / "default.txt").read_text(encoding="utf-8").strip()


def messages(text: str, lang: str, template: str) -> Messages:
    """The conversation asking to restore ``text``: system = instructions, user = the transcript."""
    name = llm.LANGUAGE_NAMES.get(lang, lang)
    return [{"role": "system", "content": template.replace("{language}", name)},
            {"role": "user", "content": text}]


@register("pnc.llm")
class LLMPunctuation(LLMStageMixin, Stage):
    """Restores punctuation and capitalisation of ``text`` in ``langs``; flags what it refuses."""

    actor = True
    DEFAULT_MODEL: ClassVar[str] = "qwen2.5-7b-instruct"

    backend: BackendOptions = Field(default_factory=VllmOptions, description="vllm | openai | transformers")
    langs: list[str] = Field(default_factory=lambda: ["en", "de", "es", "fr", "it"], min_length=1,
                             description="languages to restore; other rows keep Whisper's text")
    max_cer: float = Field(guard.MAX_CER, ge=0, le=1, description="words may differ by at most this CER")
    max_upper_ratio: float = Field(guard.MAX_UPPER_RATIO, ge=0, le=1,
                                   description="keep the original when more letters than this are upper case")
    max_new_tokens: int = Field(1024, ge=1, description="cap; each batch asks for 16 + its longest text in chars")
    prompt_dir: str | None = Field(None, description="directory of {lang}.txt prompts replacing the bundled ones")
    batch_size: int = 256

    _backend: Backend | None = PrivateAttr(None)

    @field_validator("langs")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in llm.LANGUAGE_NAMES]
        if unknown:
            raise ValueError(f"unknown language codes {unknown}")
        return value

    def __getstate__(self) -> dict[Any, Any]:  # ship the config to workers, never a loaded engine
        state = super().__getstate__()
        state["__pydantic_private__"] = {**(state.get("__pydantic_private__") or {}), "_backend": None}
        return state

    def models(self) -> list[str]:
        return self._model_refs()

    def setup(self) -> None:
        self._engine()

    def templates(self) -> dict[str, str]:
        """The system prompt of each of ``langs`` (``prompt_dir``'s, else the bundled ones), ``{language}`` unfilled."""
        return {lang: prompt_template(lang, self.prompt_dir) for lang in self.langs}

    def process(self, active: pa.Table) -> pa.Table:
        self._engine()
        texts = active.column("text").to_pylist()
        langs = active.column("lang").to_pylist()
        templates = self.templates()
        todo = [i for i, (t, lang) in enumerate(zip(texts, langs, strict=True))
                if lang in templates and t and t.strip()]
        if not todo:
            return active
        prompts = [messages(texts[i], langs[i], templates[langs[i]]) for i in todo]
        budget = min(self.max_new_tokens, 16 + max(len(texts[i]) for i in todo))
        outputs = self._generate(prompts, budget)
        new_text = list(texts)
        text_asr = active.column("text_asr").to_pylist()
        flags: list[list[str]] = [[] for _ in texts]
        for i, answer in zip(todo, outputs, strict=True):
            restored = guard.clean_output(answer, texts[i])
            rule = guard.check(texts[i], restored, self.max_cer, self.max_upper_ratio, langs[i])
            if rule is not None:  # check() names a missing answer call_failed
                flags[i].append(f"pnc:{rule}")
                continue
            assert restored is not None
            restored = normalize(restored, langs[i])
            if restored != texts[i]:
                text_asr[i] = text_asr[i] if text_asr[i] is not None else texts[i]
                new_text[i] = restored
        table = schema.set_column(active, "text", new_text)
        table = schema.set_column(table, "text_asr", text_asr)
        return schema.add_flags(table, flags)

    def run_info(self) -> dict[str, Any]:
        info = self._backend_info()
        return {
            "punctuation": (f"LLM restoration ({info['model']} via {info['name']}) for {', '.join(self.langs)}, "
                            f"guarded (words CER <= {self.max_cer}, upper case <= {self.max_upper_ratio}); "
                            "refused rows keep Whisper's text and are flagged pnc:<rule>; "
                            "other languages keep Whisper's own punctuation"),
            "backend": info,
            "langs": list(self.langs),
            "prompts_sha256": {lang: hashlib.sha256(t.encode()).hexdigest() for lang, t in self.templates().items()},
        }
