"""LLM test fixtures that download nothing.

- ``build_tiny_model(dir)``: a randomly initialised Qwen2 causal LM (hidden 32, 2 layers) with a
  byte-level BPE tokenizer trained here on a few sentences and a ChatML chat template, saved as
  a normal Hugging Face model directory. Its output is garbage, which is the point: guards must
  refuse it.
- ``FakeOpenAI``: a threaded ``http.server`` on 127.0.0.1 speaking ``POST /v1/chat/completions``,
  whose answer to each request a test scripts (status, content, delay, malformed body). It counts
  requests per user message and the most requests in flight at once. Sleeps are capped, and the
  server is shut down when the ``with`` block ends.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SENTENCES = [
    "the morning train was late again so i bought a coffee and waited at the station",
    "please remember to feed the cat while we are away on holiday",
    "heute morgen habe ich den bus verpasst und musste zur arbeit laufen",
    "esta tarde vamos a visitar a mis abuelos en el pueblo",
    "questa mattina ho comprato il pane fresco nel forno vicino a casa",
    "Translate the following English source text to German:",
    "You restore punctuation and capitalisation in automatic speech transcripts.",
]


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Build and save a tiny random chat model + tokenizer into ``out_dir``; returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                   unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(out_dir)

    config = Qwen2Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=True, initializer_range=0.2)  # wide init: varied garbage
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    return out_dir


@functools.lru_cache(maxsize=1)
def tiny_model_dir() -> Path:
    """The tiny model, built once per test process into a temporary directory (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="granary-tiny-llm-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_model(root / "model")


# ----------------------------------------------------------------------------- fake OpenAI server

@dataclass
class Reply:
    """What the fake server answers to one request."""

    content: str | None = None  # the completion text (200 with a chat-completions body)
    status: int = 200
    raw: bytes | None = None  # a body sent as is (malformed JSON, ...)
    delay_s: float = 0.0  # sleep before answering (capped at MAX_DELAY_S)
    headers: dict[str, str] = field(default_factory=dict)


MAX_DELAY_S = 2.0


def completion(content: str, model: str = "fake") -> bytes:
    """A chat-completions response body."""
    return json.dumps({
        "id": "cmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }).encode()


def user_text(body: dict) -> str:
    """Content of the last user message of a request body."""
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


class FakeOpenAI:
    """``with FakeOpenAI(reply) as server:`` → ``server.base_url`` (``http://127.0.0.1:PORT/v1``).

    ``reply(body, attempt)`` gets the request JSON and how many times this user message was
    seen before (0 on the first request) and returns a ``Reply``.
    """

    def __init__(self, reply: Callable[[dict, int], Reply]) -> None:
        self.reply = reply
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.seen: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if self.path != "/v1/chat/completions":
                    return self._send(Reply(status=404, raw=b'{"error": "not found"}'))
                with outer._lock:
                    key = user_text(body)
                    attempt = outer.seen[key]
                    outer.seen[key] += 1
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers))
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    reply = outer.reply(body, attempt)
                    time.sleep(min(reply.delay_s, MAX_DELAY_S))
                    self._send(reply)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            def _send(self, reply: Reply) -> None:
                data = reply.raw if reply.raw is not None else (
                    completion(reply.content) if reply.status == 200 else b'{"error": {"message": "scripted"}}')
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def punctuate(text: str) -> str:
    """What a good PNC model answers: the same words, capitalised, with a full stop."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")
