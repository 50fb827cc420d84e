"""Stages, registered by short name on import (see ``granary_pipe.registry``)."""

from granary_pipe.stages.asr import language_id, transcribe, two_pass  # noqa: F401
from granary_pipe.stages.audio import decode  # noqa: F401
from granary_pipe.stages.filters import basic, hallucination, pass_agreement, text_lang  # noqa: F401
from granary_pipe.stages.license import gate  # noqa: F401
from granary_pipe.stages.pnc import llm as pnc_llm  # noqa: F401
from granary_pipe.stages.pnc import none as pnc_none  # noqa: F401
from granary_pipe.stages.segment import pyannote, silero  # noqa: F401
from granary_pipe.stages.translate import llm as translate_llm  # noqa: F401
from granary_pipe.stages.translate import whisper as translate_whisper  # noqa: F401
