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
    local_models,
    make_backend,
)
from granary_pipe.llm.languages import LANGUAGE_NAMES, language_name

__all__ = [
    "Backend", "BackendOptions", "Messages", "OpenAIOptions", "TransformersOptions", "VllmOptions",
    "describe", "gpu_use", "local_models", "make_backend", "LANGUAGE_NAMES", "language_name",
]
