"""What the LLM stages (``pnc.llm``, ``translate.llm``) share: their backend, built once per worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from granary_pipe import llm
from granary_pipe.llm import Backend, BackendOptions, Messages
from granary_pipe.stage import GpuUse


class LLMStageMixin:
    """Methods only, no fields (``granary stages`` lists a stage's own): put it first among the bases so its
    ``gpu_use`` wins; the stage declares ``backend``, ``DEFAULT_MODEL`` and a ``_backend`` PrivateAttr."""

    if TYPE_CHECKING:  # declared by the stage: pydantic would take annotations of a base for fields
        DEFAULT_MODEL: ClassVar[str]
        name: ClassVar[str]
        backend: BackendOptions
        _backend: Backend | None

    def gpu_use(self) -> GpuUse | None:
        return llm.gpu_use(self.backend)

    def _engine(self) -> Backend:
        """The LLM backend, made on first use (once per worker)."""
        if self._backend is None:
            self._backend = llm.make_backend(self.backend, self.DEFAULT_MODEL)
        return self._backend

    def _generate(self, prompts: list[Messages], max_new_tokens: int) -> list[str | None]:
        """One answer per prompt (None: that call failed); RuntimeError when the backend miscounts."""
        outputs = self._engine().generate(prompts, max_new_tokens)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"LLM backend returned {len(outputs)} answers for {len(prompts)} prompts")
        return outputs

    def _model_refs(self) -> list[str]:
        return llm.model_refs(self.backend, self.DEFAULT_MODEL, self.name)

    def _backend_info(self) -> dict[str, Any]:
        return llm.describe(self.backend, self.DEFAULT_MODEL)
