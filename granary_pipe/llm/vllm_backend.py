"""vLLM offline batch generation (``pip install granary_pipe[gpu]``; needs a CUDA GPU): one engine
per actor, a whole batch of conversations per ``LLM.chat`` call, greedy decoding."""

from __future__ import annotations

import logging
from typing import Any

from granary_pipe import models
from granary_pipe.llm.base import Backend, Messages, VllmOptions

log = logging.getLogger(__name__)


def model_path(name: str, allow_hub: bool) -> str:
    """Local path of ``name``; with ``allow_hub`` a registry model without a copy gives its hub id."""
    try:
        return str(models.resolve(name))
    except models.ModelNotFound:
        if allow_hub and name in models.MODELS:
            return models.MODELS[name].model_id
        raise


class VllmBackend(Backend):
    def __init__(self, options: VllmOptions, model: str) -> None:
        import vllm  # the [gpu] extra; imported only where the engine runs

        self.options = options
        self.model = model
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model_path(model, options.allow_hub),
            tensor_parallel_size=options.tensor_parallel_size,
            dtype=options.dtype,
            max_model_len=options.max_model_len,
            gpu_memory_utilization=options.gpu_memory_utilization,
            seed=options.seed,
        )

    def sampling_params(self, max_new_tokens: int) -> Any:
        """vLLM ``SamplingParams`` for greedy decoding (temperature 0) of at most ``max_new_tokens`` tokens."""
        return self._vllm.SamplingParams(temperature=0, max_tokens=max_new_tokens)

    def generate(self, prompts: list[Messages], max_new_tokens: int) -> list[str | None]:
        if not prompts:
            return []
        params = self.sampling_params(max_new_tokens)
        try:
            outputs = self.llm.chat(prompts, params, use_tqdm=False)
        except ValueError as exc:
            # vLLM validates every prompt first (e.g. longer than max_model_len) and fails the
            # whole batch for one bad item: retry one by one so only that item fails.
            log.warning("vLLM refused a batch (%s); retrying item by item", exc)
            return [self._one(m, params) for m in prompts]
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        return [_text(o) for o in outputs]

    def _one(self, messages: Messages, params: Any) -> str | None:
        try:
            return _text(self.llm.chat([messages], params, use_tqdm=False)[0])
        except ValueError as exc:
            log.warning("vLLM refused a prompt: %s", exc)
            return None


def _text(output: Any) -> str | None:
    """Text of the first completion of a ``RequestOutput`` (None when there is none)."""
    completions = getattr(output, "outputs", None) or []
    return completions[0].text if completions else None
