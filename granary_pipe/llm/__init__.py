"""LLM backends for text stages (punctuation restoration, translation): see ``llm.base``."""

from granary_pipe.llm.base import (
    Backend,
    BackendOptions,
    Messages,
    OpenAIOptions,
    TransformersOptions,
    VllmOptions,
    describe,
    gpu_use,
    make_backend,
    model_refs,
)
from granary_pipe.llm.languages import LANGUAGE_NAMES, language_name

__all__ = [
    "Backend", "BackendOptions", "Messages", "OpenAIOptions", "TransformersOptions", "VllmOptions",
    "describe", "gpu_use", "make_backend", "model_refs", "LANGUAGE_NAMES", "language_name",
]
