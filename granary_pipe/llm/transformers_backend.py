"""Hugging Face ``transformers`` generation on a local model directory (CPU-capable): prompts from
the tokenizer's chat template, batched by similar length, left-padded, decoded greedily."""

from __future__ import annotations

from typing import cast

from granary_pipe import models
from granary_pipe.llm.base import Backend, Messages, TransformersOptions


class TransformersBackend(Backend):
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` loaded once, from local files only."""

    def __init__(self, options: TransformersOptions, model: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = options
        self.model_name = model
        path = str(models.resolve(model))
        if options.cpu_threads:
            torch.set_num_threads(options.cpu_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"model {model!r} ({path}): the tokenizer has no chat template; use an instruct model")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = "auto" if options.dtype == "auto" else getattr(torch, options.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
        # transformers types ``to`` through a decorator that mypy reads as taking the model again
        self.model.to(options.device).eval()  # type: ignore[arg-type]

    def prompt_texts(self, prompts: list[Messages]) -> list[str]:
        """Each conversation rendered by the chat template, ending with the assistant's turn."""
        # with tokenize=False the template renders text (its annotation lists every mode's type)
        return [cast(str, self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True))
                for m in prompts]

    def generate(self, prompts: list[Messages], max_new_tokens: int) -> list[str | None]:
        import torch
        from transformers import GenerationConfig

        texts = self.prompt_texts(prompts)
        tok = self.tokenizer
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))  # similar lengths: less padding
        out: list[str | None] = [None] * len(texts)
        for k in range(0, len(order), self.options.batch_size):
            idx = order[k : k + self.options.batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(self.options.device)
            with torch.inference_mode():
                generated = self.model.generate(**enc, generation_config=config)
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            for i, seq in zip(idx, new_tokens, strict=True):
                out[i] = cast(str, tok.decode(seq, skip_special_tokens=True)).strip()  # one sequence: one text
        return out
