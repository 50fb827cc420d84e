"""Training configuration: ``pipelines/train-*.yaml`` validated by pydantic, errors naming the file,
the key path and the line as for pipeline files. Checkpoints store the resolved config."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from granary_pipe.config import ConfigError, _errors, read_yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "_data" / "pipelines" / "train-base.yaml"
"""``granary train`` without ``--config``, not resuming."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """Conformer-CTC sizes. ``d_model`` must divide by ``heads`` and give an even head size (RoPE)."""

    n_mels: int = Field(80, ge=8, description="log-mel bins of the input features")
    d_model: int = Field(256, ge=8)
    layers: int = Field(12, ge=1)
    heads: int = Field(4, ge=1)
    ff_mult: int = Field(4, ge=1, description="feed-forward hidden size = ff_mult * d_model")
    conv_kernel: int = Field(31, ge=3, description="depthwise conv kernel (odd)")
    conv_norm: Literal["batchnorm", "layernorm"] = "layernorm"
    subsampling_channels: int = Field(256, ge=1, description="channels of the conv2d x4 subsampling")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    rope_base: float = Field(10000.0, gt=1.0)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            raise ValueError(f"d_model {self.d_model} / heads {self.heads} must be an even integer (RoPE)")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")
        return self


class SpecAugmentConfig(_Strict):
    """Frequency and time masking on the log-mel batch (zeros = no masking)."""

    freq_masks: int = Field(2, ge=0)
    freq_width: int = Field(27, ge=0, description="most mel bins per frequency mask")
    time_masks: int = Field(2, ge=0)
    time_width_frac: float = Field(0.05, ge=0.0, le=1.0, description="most frames per mask, share of the utterance")
    max_time_width: int = Field(40, ge=0, description="cap on frames per time mask")


class DataConfig(_Strict):
    """What is read from the release and how it is batched."""

    langs: list[str] | None = Field(None, description="train on these languages (default: all in the release)")
    held_out_pct: float = Field(5.0, ge=0.0, lt=100.0, description="share of rows held out, by a hash of their id")
    min_duration_s: float = Field(0.3, ge=0.0)
    max_duration_s: float = Field(30.0, gt=0.0)
    bucket_boundaries_s: list[float] = Field(default_factory=lambda: [2.0, 4.0, 8.0, 16.0, 30.0])
    max_batch_s: float = Field(240.0, gt=0.0, description="padded audio seconds per batch (n * longest)")
    max_batch_size: int = Field(128, ge=1)
    shuffle_buffer: int = Field(1000, ge=0, description="webdataset shuffle buffer (samples); 0 = off")
    loader_workers: int = Field(2, ge=0, description="DataLoader processes decoding audio + features")
    prefetch_batches: int = Field(4, ge=1, description="batches each loader worker keeps ready")
    text_norm: Literal["lower_nopunct", "none"] = "lower_nopunct"
    spec_augment: SpecAugmentConfig = Field(default_factory=SpecAugmentConfig)

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        b = self.bucket_boundaries_s
        if not b or any(x >= y for x, y in pairwise(b)) or b[0] <= 0:
            raise ValueError("bucket_boundaries_s must be positive and increasing")
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("min_duration_s must be below max_duration_s")
        return self


class TokenizerConfig(_Strict):
    """SentencePiece trained on the release's training transcripts."""

    vocab_size: int = Field(256, ge=8, description="per tokenizer; a soft limit on tiny corpora")
    model_type: Literal["unigram", "bpe", "char"] = "unigram"
    shared: bool = Field(True, description="one tokenizer for all languages; false: one per language, "
                                           "concatenated into one output layer")
    lang_tags: bool = Field(False, description="prepend a <lang> token to every target")
    character_coverage: float = Field(1.0, gt=0.0, le=1.0)


class OptimConfig(_Strict):
    """AdamW; the peak learning rate lives in ``schedule``."""

    weight_decay: float = Field(1e-3, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-9, gt=0.0)
    grad_clip: float | None = Field(5.0, gt=0.0, description="max global grad norm; null = no clipping")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")


class ScheduleConfig(_Strict):
    """Warmup shape, then inverse-sqrt decay ``peak_lr * sqrt(w / i)`` (see :mod:`.schedules`)."""

    name: Literal["linear", "piecewise", "exponential", "polynomial"] = "linear"
    peak_lr: float = Field(1e-3, gt=0.0)
    warmup_steps: int = Field(1000, ge=1)
    alpha: float = Field(1.5, gt=0.0, description="exponential: growth rate")
    power: float = Field(1.5, gt=0.0, description="polynomial: exponent")
    warmup_steps_list: list[float] | None = Field(
        None, description="piecewise (ESPnet form): default [0, w/2, w]; last must equal warmup_steps")
    warmup_lr_list: list[float] | None = Field(
        None, description="piecewise: default [0, peak/4, peak]; last must equal peak_lr")

    @model_validator(mode="after")
    def _check(self) -> "ScheduleConfig":
        steps, lrs = self.warmup_steps_list, self.warmup_lr_list
        if (steps is None) != (lrs is None):
            raise ValueError("give both warmup_steps_list and warmup_lr_list, or neither")
        if steps is None or lrs is None:
            return self
        if self.name != "piecewise":
            raise ValueError("warmup_steps_list/warmup_lr_list apply to name: piecewise only")
        if len(steps) != len(lrs) or len(steps) < 2:
            raise ValueError("warmup_steps_list and warmup_lr_list need the same length (>= 2)")
        if steps[0] != 0 or any(a >= b for a, b in pairwise(steps)):
            raise ValueError("warmup_steps_list must start at 0 and increase")
        if steps[-1] != self.warmup_steps:
            raise ValueError(f"warmup_steps_list ends at {steps[-1]}, warmup_steps is {self.warmup_steps}")
        if abs(lrs[-1] - self.peak_lr) > 1e-12 * max(1.0, self.peak_lr):
            raise ValueError(f"warmup_lr_list ends at {lrs[-1]}, peak_lr is {self.peak_lr}")
        return self


class LoopConfig(_Strict):
    """Step counts, intervals, precision and determinism."""

    max_steps: int = Field(10000, ge=1)
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(1000, ge=1)
    ckpt_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept")
    eval_max_utts: int | None = Field(None, ge=1, description="cap held-out utterances per eval")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="GPU only: auto = bf16 where supported, else fp16 (+ GradScaler)")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's)")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms(True)")
    check_replicas_every: int | None = Field(
        None, ge=1, description="DDP: every N steps (and at the last) log the largest parameter difference "
                                "between ranks ({kind: replicas} in metrics.jsonl; a warning when not 0); null = off")


class TrainConfig(_Strict):
    """A whole ``pipelines/train-*.yaml``."""

    name: str
    description: str = ""
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: LoopConfig = Field(default_factory=LoopConfig)


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a training YAML (default :data:`DEFAULT_CONFIG`) with ``overrides``, dotted
    keys (``{"train.max_steps": 50}``) applied before validation."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'name', 'model', 'data', ...")
    for dotted, value in (overrides or {}).items():
        cur = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            cur = cur.setdefault(key, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"{path}: override {dotted}: {key} is not a mapping")
        cur[leaf] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_errors(path, node, err)) from None
