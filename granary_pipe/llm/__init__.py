"""LLM backends for text stages (punctuation restoration, translation); an engine is imported only when
:func:`make_backend` builds its backend."""

from __future__ import annotations

from granary_pipe.llm.base import (
    Backend,
    BackendOptions,
    Messages,
    OpenAIOptions,
    TransformersOptions,
    VllmOptions,
    _model_name,
    describe,
    gpu_use,
    model_refs,
)
from granary_pipe.llm.languages import LANGUAGE_NAMES, language_name


def make_backend(options: BackendOptions, default_model: str) -> Backend:
    """Build the backend the options name (imports its engine only now)."""
    if options.name == "vllm":
        from granary_pipe.llm.vllm_backend import VllmBackend

        return VllmBackend(options, _model_name(options, default_model))
    if options.name == "openai":
        from granary_pipe.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(options)
    if options.name == "transformers":
        from granary_pipe.llm.transformers_backend import TransformersBackend

        return TransformersBackend(options, _model_name(options, default_model))
    raise ValueError(f"unknown LLM backend {options.name!r}")


__all__ = [
    "Backend", "BackendOptions", "Messages", "OpenAIOptions", "TransformersOptions", "VllmOptions",
    "describe", "gpu_use", "make_backend", "model_refs", "LANGUAGE_NAMES", "language_name",
]
