"""LLM backends: the OpenAI client against a real local HTTP server (failures included), the
transformers backend on a tiny model built here, and the vLLM backend's calls into a stand-in for
the ``vllm`` package (no GPU here; the product code around it is the real one)."""

from __future__ import annotations

import socket
import sys
import time
import types

import pytest
from pydantic import ValidationError

from granary_pipe import models
from granary_pipe.llm import OpenAIOptions, TransformersOptions, VllmOptions, make_backend
from granary_pipe.llm.openai_backend import OpenAIBackend
from granary_pipe.stages.pnc.llm import LLMPunctuation

try:
    from tests import llm_fixtures as lf
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    import llm_fixtures as lf

CONV = [{"role": "system", "content": "restore"}, {"role": "user", "content": "hello world"}]


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def client(server: lf.FakeOpenAI, **kw) -> OpenAIBackend:
    opts = dict(base_url=server.base_url, model="fake-model", timeout_s=2.0, max_retries=2, backoff_s=0.01,
                backoff_max_s=0.05, concurrency=4)
    opts.update(kw)
    return make_backend(OpenAIOptions(**opts), "unused")


# ============================================================================= openai: real HTTP

def test_openai_success_sends_a_greedy_chat_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with lf.FakeOpenAI(lambda body, n: lf.Reply(content=lf.punctuate(lf.user_text(body)))) as server:
        out = client(server).generate([CONV, conv("second one")], max_new_tokens=77)
    assert out == ["Hello world.", "Second one."]
    body = server.bodies[0]
    assert body["model"] == "fake-model" and body["temperature"] == 0 and body["max_tokens"] == 77
    assert body["messages"] in (CONV, conv("second one"))
    assert all("Authorization" not in h for h in server.headers)  # key env var unset: no auth header


def test_openai_api_key_from_the_named_env_var(monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test-123")
    with lf.FakeOpenAI(lambda body, n: lf.Reply(content="ok")) as server:
        assert client(server, api_key_env="MY_LLM_KEY").generate([CONV], 8) == ["ok"]
    assert server.headers[0]["Authorization"] == "Bearer sk-test-123"


def test_openai_429_then_success_is_retried():
    def reply(body, attempt):
        return lf.Reply(status=429, headers={"Retry-After": "0"}) if attempt == 0 else lf.Reply(content="Fine.")

    with lf.FakeOpenAI(reply) as server:
        assert client(server).generate([CONV], 8) == ["Fine."]
    assert server.seen["hello world"] == 2


def test_openai_500_fails_the_item_after_the_retries():
    def reply(body, attempt):
        return lf.Reply(status=500) if "broken" in lf.user_text(body) else lf.Reply(content="ok")

    with lf.FakeOpenAI(reply) as server:
        out = client(server, max_retries=2).generate([conv("broken"), CONV], 8)
    assert out == [None, "ok"]
    assert server.seen["broken"] == 3  # 1 try + 2 retries


def test_openai_timeout_fails_the_item():
    def reply(body, attempt):
        return lf.Reply(content="late", delay_s=1.0) if "slow" in lf.user_text(body) else lf.Reply(content="ok")

    with lf.FakeOpenAI(reply) as server:
        t0 = time.monotonic()
        out = client(server, timeout_s=0.2, max_retries=1).generate([conv("slow"), CONV], 8)
        took = time.monotonic() - t0
    assert out == [None, "ok"]
    assert server.seen["slow"] == 2 and took < 1.5


@pytest.mark.parametrize("raw", [b"{not json", b'{"choices": []}', b'{"choices": [{"message": {"content": 5}}]}',
                                 b'"just a string"'])
def test_openai_malformed_answer_fails_the_item_without_retry(raw):
    with lf.FakeOpenAI(lambda body, n: lf.Reply(raw=raw)) as server:
        assert client(server).generate([CONV], 8) == [None]
    assert server.seen["hello world"] == 1


def test_openai_client_error_is_not_retried():
    with lf.FakeOpenAI(lambda body, n: lf.Reply(status=400)) as server:
        assert client(server).generate([CONV], 8) == [None]
    assert server.seen["hello world"] == 1


def test_openai_connection_refused_fails_the_item():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = make_backend(OpenAIOptions(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1,
                                         backoff_s=0.01, timeout_s=0.5), "unused")
    assert backend.generate([CONV], 8) == [None]


def test_openai_concurrency_is_limited_and_order_kept():
    with lf.FakeOpenAI(lambda body, n: lf.Reply(content=lf.user_text(body).upper(), delay_s=0.1)) as server:
        texts = [f"item {i}" for i in range(9)]
        out = client(server, concurrency=3).generate([conv(t) for t in texts], 8)
    assert out == [t.upper() for t in texts]
    assert 2 <= server.max_in_flight <= 3


# ============================================================================= options

def test_backend_options_are_validated_by_name():
    with pytest.raises(ValidationError, match="base_url"):
        LLMPunctuation(backend={"name": "openai", "model": "m"})
    with pytest.raises(ValidationError, match="base_url"):
        LLMPunctuation(backend={"name": "vllm", "base_url": "http://x/v1"})  # not a vllm option
    with pytest.raises(ValidationError):
        LLMPunctuation(backend={"name": "llamacpp"})
    stage = LLMPunctuation(backend={"name": "vllm", "tensor_parallel_size": 2})
    assert stage.backend.tensor_parallel_size == 2 and stage.models() == ["qwen2.5-7b-instruct"]


# ============================================================================= transformers: tiny local model

@pytest.fixture(scope="module")
def tiny():
    return make_backend(TransformersOptions(model=str(lf.tiny_model_dir()), batch_size=2), "unused")


def test_transformers_generates_one_string_per_conversation(tiny):
    prompts = [CONV, conv("the morning train"), conv("a much longer conversation about the station and a coffee")]
    out = tiny.generate(prompts, max_new_tokens=12)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert tiny.tokenizer.padding_side == "left"
    rendered = tiny.prompt_texts([CONV])[0]
    assert rendered.endswith("<|im_start|>assistant\n") and "hello world" in rendered


def test_transformers_batched_left_padding_matches_one_by_one(tiny):
    prompts = [conv("hello"), conv("the morning train was late again so i bought a coffee")]
    batched = tiny.generate(prompts, max_new_tokens=8)
    single = [tiny.generate([p], max_new_tokens=8)[0] for p in prompts]
    assert batched == single


def test_transformers_needs_a_chat_template(tmp_path):
    import shutil

    src = lf.tiny_model_dir()
    dst = tmp_path / "nochat"
    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    cfg = dst / "tokenizer_config.json"
    cfg.write_text(cfg.read_text().replace('"chat_template"', '"unused_template"'))
    with pytest.raises(ValueError, match="chat template"):
        make_backend(TransformersOptions(model=str(dst)), "unused")


# ============================================================================= vllm: stand-in engine

class FakeVllm:
    """Test double of the ``vllm`` package: records how the backend builds and calls the engine."""

    def __init__(self) -> None:
        self.module = types.ModuleType("vllm")
        self.init_kwargs: dict = {}
        self.calls: list[tuple[list, object, dict]] = []
        fake = self

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class LLM:
            def __init__(self, **kw):
                fake.init_kwargs = kw

            def chat(self, messages, sampling_params, **kw):
                fake.calls.append((messages, sampling_params, kw))
                if any("TOO LONG" in m[-1]["content"] for m in messages):
                    raise ValueError("prompt is longer than max_model_len")
                return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=m[-1]["content"].title())])
                        for m in messages]

        self.module.LLM = LLM
        self.module.SamplingParams = SamplingParams


@pytest.fixture()
def fake_vllm(monkeypatch):
    fake = FakeVllm()
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    return fake


def test_vllm_builds_the_engine_and_greedy_params(fake_vllm, monkeypatch, tmp_path):
    monkeypatch.setenv("GRANARY_MODEL_QWEN2_5_7B_INSTRUCT", str(tmp_path))
    backend = make_backend(VllmOptions(tensor_parallel_size=2, dtype="bfloat16", max_model_len=2048),
                           "qwen2.5-7b-instruct")
    assert fake_vllm.init_kwargs == {"model": str(tmp_path), "tensor_parallel_size": 2, "dtype": "bfloat16",
                                     "max_model_len": 2048, "gpu_memory_utilization": 0.9, "seed": 0}
    out = backend.generate([CONV, conv("good day")], max_new_tokens=64)
    assert out == ["Hello World", "Good Day"]
    (messages, params, kw), = fake_vllm.calls
    assert messages == [CONV, conv("good day")]  # one batch; vLLM applies the chat template
    assert params.kw == {"temperature": 0, "max_tokens": 64} and kw == {"use_tqdm": False}


def test_vllm_one_refused_prompt_fails_only_that_item(fake_vllm, tmp_path):
    backend = make_backend(VllmOptions(model=str(tmp_path)), "qwen2.5-7b-instruct")
    assert backend.generate([CONV, conv("TOO LONG"), conv("ok then")], 16) == ["Hello World", None, "Ok Then"]


def test_vllm_model_without_local_copy(fake_vllm, monkeypatch):
    monkeypatch.delenv("GRANARY_MODEL_EUROLLM_9B_INSTRUCT", raising=False)
    with pytest.raises(models.ModelNotFound, match="GRANARY_MODEL_EUROLLM_9B_INSTRUCT"):
        make_backend(VllmOptions(), "eurollm-9b-instruct")
    make_backend(VllmOptions(allow_hub=True), "eurollm-9b-instruct")
    assert fake_vllm.init_kwargs["model"] == "utter-project/EuroLLM-9B-Instruct"
