"""Stages, registered by short name on import (see ``granary_pipe.registry``)."""

from granary_pipe.stages.asr import language_id, transcribe  # noqa: F401
from granary_pipe.stages.audio import decode  # noqa: F401
from granary_pipe.stages.filters import basic  # noqa: F401
from granary_pipe.stages.license import gate  # noqa: F401
from granary_pipe.stages.segment import silero  # noqa: F401
