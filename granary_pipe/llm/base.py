"""One small interface over three ways to run an instruction-tuned LLM (``vllm``, ``openai``, ``transformers``),
chosen by the options' ``name``. Design: docs/architecture.md, "pnc.llm / pnc.none"."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from granary_pipe import models
from granary_pipe.models import DeclaredLicense
from granary_pipe.stage import GpuUse

Messages = list[dict[str, str]]
"""One chat conversation: ``[{"role": "system", "content": ...}, {"role": "user", ...}]``."""


class Backend(ABC):
    """Generates one completion per conversation; ``None`` marks a failed item."""

    @abstractmethod
    def generate(self, prompts: list[Messages], max_new_tokens: int) -> list[str | None]:
        """Greedy completions, in the order of ``prompts``."""

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release threads, connections or engines (optional)."""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_license: DeclaredLicense = Field(
        default=None, description="SPDX id of the model's license (licenses/registry.yaml), required for a release "
                                  "when the model is a path or served over an API; registry models carry their own")


class VllmOptions(_Options):
    """Offline vLLM engine in this process (the stage's actor reserves the GPUs)."""

    name: Literal["vllm"] = "vllm"
    model: str | None = Field(default=None, description="registry name or path; None = the stage's default model")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per engine; reserve as many in resources.gpus")
    dtype: str = Field(default="auto", description="vLLM dtype: auto, bfloat16, float16")
    max_model_len: int | None = Field(default=4096, ge=256, description="context length (prompt + output tokens)")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    allow_hub: bool = Field(default=False, description="when the model has no local copy, let vLLM fetch its hub id")
    seed: int = 0


class OpenAIOptions(_Options):
    """A server speaking the OpenAI chat-completions API (``vllm serve MODEL`` gives one)."""

    name: Literal["openai"] = "openai"
    base_url: str = Field(description="API root, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="model name as the server knows it")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="env var holding the key; unset = no auth")
    timeout_s: float = Field(60.0, gt=0, description="per request: connect and read timeout")
    max_retries: int = Field(4, ge=0, description="retries after timeouts, 429, 5xx, connection errors")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry, with jitter")
    backoff_max_s: float = Field(30.0, ge=0)
    concurrency: int = Field(8, ge=1, description="requests in flight at once (threads)")


class TransformersOptions(_Options):
    """Hugging Face ``transformers`` on a local model directory; runs on CPU."""

    name: Literal["transformers"] = "transformers"
    model: str | None = Field(None, description="registry name or local path; None = the stage's default")
    device: str = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(8, ge=1, description="conversations per forward pass")
    cpu_threads: int = Field(0, ge=0, description="torch threads; 0 = torch's default")


BackendOptions = Annotated[Union[VllmOptions, OpenAIOptions, TransformersOptions], Field(discriminator="name")]


def _model_name(options: BackendOptions, default_model: str) -> str:
    return options.model or default_model


def model_refs(options: BackendOptions, default_model: str, stage: str) -> list[str]:
    """The model a backend uses, for ``run.json``, with its declared license (``openai:NAME`` for a server)."""
    param = "backend.model_license"
    if options.name == "openai":
        return [models.ModelRef(f"openai:{options.model}", stage, options.model_license, param,
                                base_url=options.base_url, served_name=options.model)]
    return [models.ModelRef(_model_name(options, default_model), stage, options.model_license, param)]


def gpu_use(options: BackendOptions) -> GpuUse | None:
    """GPUs a backend's engine runs on in the stage's worker (None: the engine needs none here)."""
    if options.name == "vllm":
        return GpuUse(why="backend vllm", devices=options.tensor_parallel_size,
                      memory_fraction=options.gpu_memory_utilization)
    if options.name == "transformers" and options.device.startswith("cuda"):
        return GpuUse(why=f"backend transformers on device={options.device}")
    return None


def describe(options: BackendOptions, default_model: str) -> dict[str, Any]:
    """Backend settings for ``run.json`` (never a key's value: only the env var's name)."""
    return {**options.model_dump(), "model": _model_name(options, default_model)}
