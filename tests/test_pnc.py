"""Punctuation restoration: the guard and the normaliser (pure), the prompts, and the ``pnc.llm``
stage against a real local OpenAI-compatible server and a tiny real transformers model."""

from __future__ import annotations

import pickle
import unicodedata

import pytest

from granary_pipe import text as text_norm
from granary_pipe.config import ConfigError, load_pipeline
from granary_pipe.llm import OpenAIOptions, TransformersOptions
from granary_pipe.schema import make_table
from granary_pipe.stages.pnc import guard
from granary_pipe.stages.pnc.llm import PROMPT_DIR, LLMPunctuation, messages, prompt_template
from granary_pipe.stages.pnc.none import NoPunctuation
from granary_pipe.stages.pnc.normalize import NBSP, normalize

try:
    from tests import llm_fixtures as lf
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    import llm_fixtures as lf


# ============================================================================= guard

def test_normalised_text_keeps_only_lower_case_words():
    assert text_norm.normalize("Hello, World! It's  “fine”…") == "hello world it s fine"


def test_cer_ignores_case_and_punctuation_only():
    assert guard.cer("hello world how are you", "Hello, world! How are you?") == 0.0
    assert guard.cer("hello world how are you", "Hello, word! How are you?") == pytest.approx(1 / 23)
    assert guard.cer("hello world", "Goodbye, moon.") > 0.5
    assert guard.cer("", "") == 0.0 and guard.cer("", "x") == 1.0


def test_upper_ratio_counts_cased_letters_only():
    assert guard.upper_ratio("HELLO world") == 0.5
    assert guard.upper_ratio("Hello.") == pytest.approx(1 / 5)
    assert guard.upper_ratio("123 ...") == 0.0
    assert guard.upper_ratio("你好") == 0.0


@pytest.mark.parametrize("restored, rule", [
    ("Hello, world. How are you?", None),
    ("hello world how are you", None),  # nothing to add is fine
    (None, "call_failed"),
    ("", "empty"),
    ("  ...  ", "empty"),
    ("HELLO, WORLD. HOW ARE YOU?", "upper_case"),
    ("Hello, world. How are you doing today, my friend?", "words_changed"),
    ("Hello world.", "words_changed"),
    ("Bonjour le monde, comment allez-vous ?", "words_changed"),
])
def test_check_rules(restored, rule):
    assert guard.check("hello world how are you", restored) == rule


def test_check_tolerates_small_changes_within_max_cer():
    original = "i think that we should leave at nine because the roads will be busy"
    assert guard.check(original, "I think that we should leave at 9, because the roads will be busy.") is None
    assert guard.check(original, "I think we should leave at nine.", max_cer=0.1) == "words_changed"


def test_clean_output_strips_wrappers():
    assert guard.clean_output("  Hello there.\n") == "Hello there."
    assert guard.clean_output("```\nHello there.\n```") == "Hello there."
    assert guard.clean_output('"Hello there."') == "Hello there."
    assert guard.clean_output('"Run!"', original='"run"') == '"Run!"'  # the original was quoted
    assert guard.clean_output('"Yes," he said, "no."') == '"Yes," he said, "no."'  # not one enclosing pair
    assert guard.clean_output(None) is None


# ============================================================================= normaliser

def test_normalize_nfc_quotes_ellipsis_and_spaces():
    decomposed = "cafe\u0301"
    assert unicodedata.is_normalized("NFC", normalize(decomposed, "en"))
    assert normalize("He said “hi” and ‘bye’ … ok", "en") == "He said \"hi\" and 'bye'... ok"
    assert normalize("Wait.... what ?", "en") == "Wait... what?"
    assert normalize("Yes , I know ; really !", "en") == "Yes, I know; really!"
    assert normalize("Hello\u00a0world\t( yes )", "en") == "Hello world (yes)"
    assert normalize("Er sagte „Hallo“ .", "de") == 'Er sagte "Hallo".'
    assert normalize("¿ Sabes dónde está ? ¡ Claro !", "es") == "¿Sabes dónde está? ¡Claro!"
    assert normalize("Don’t stop", "en") == "Don't stop"


def test_normalize_french_keeps_no_break_space_before_high_punctuation():
    assert normalize("Tu viens? Oui: demain; c'est sûr!", "fr") == (
        f"Tu viens{NBSP}? Oui{NBSP}: demain{NBSP}; c'est sûr{NBSP}!")
    assert normalize("Vraiment ?!", "fr") == f"Vraiment{NBSP}?!"
    assert normalize("Il est 10:30 .", "fr") == "Il est 10:30."
    assert normalize("Il a dit «bonjour» .", "fr") == f"Il a dit «{NBSP}bonjour{NBSP}»."
    assert normalize(f"Quoi{NBSP}?", "fr") == f"Quoi{NBSP}?"  # idempotent


def test_normalize_keeps_words():
    text = "Hello , “world” … how are you ?"
    for lang in ("en", "fr", "de"):
        assert text_norm.normalize(normalize(text, lang), lang) == text_norm.normalize(text, lang)


# ============================================================================= prompts

@pytest.mark.parametrize("lang", ["en", "de", "es", "fr", "it", "default"])
def test_prompt_files_say_punctuation_only(lang):
    text = (PROMPT_DIR / f"{lang}.txt").read_text(encoding="utf-8").lower()
    assert "punctuation" in text and "capitalisation" in text
    assert "do not add, remove" in text and "output only" in text


def test_prompt_falls_back_to_default_and_names_the_language():
    assert prompt_template("pt") == prompt_template("default")
    conv = messages("ola mundo", "pt", prompt_template("pt"))
    system = conv[0]["content"]
    assert conv[0]["role"] == "system" and "in Portuguese" in system and "{language}" not in system
    assert conv[1] == {"role": "user", "content": "ola mundo"}
    assert "German" in messages("hallo", "de", prompt_template("de"))[0]["content"]


# ============================================================================= pnc.llm stage, real local server

ROWS = [
    ("good", "en", "hello world how are you"),
    ("french", "fr", "tu viens demain oui"),
    ("changed", "en", "the cat sat on the mat"),
    ("shout", "en", "this is quiet speech"),
    ("empty", "de", "das ist alles"),
    ("fail500", "en", "server error here please"),
    ("badjson", "en", "broken answer here please"),
    ("slow", "en", "a slow answer here please"),
    ("russian", "ru", "privet mir"),  # not in langs: left alone, not sent
    ("rejected", "en", "already rejected row"),
]


def scripted(body, attempt):
    text = lf.user_text(body)
    if text.startswith("the cat"):
        return lf.Reply(content="The dog sat on the rug.")
    if text.startswith("this is quiet"):
        return lf.Reply(content="THIS IS QUIET SPEECH!")
    if text.startswith("das ist"):
        return lf.Reply(content="   ")
    if text.startswith("server error"):
        return lf.Reply(status=500)
    if text.startswith("broken"):
        return lf.Reply(raw=b'{"choices": [')
    if text.startswith("a slow"):
        return lf.Reply(content="A slow answer.", delay_s=0.6)
    if text.startswith("tu viens"):
        return lf.Reply(content="Tu viens demain ? Oui.")
    return lf.Reply(content=lf.punctuate(text))


def table():
    return make_table([{"id": rid, "recording_id": rid, "lang": lang, "text": text,
                        "drop_reason": "filter:empty_text" if rid == "rejected" else None}
                       for rid, lang, text in ROWS])


@pytest.fixture(scope="module")
def pnc_out():
    with lf.FakeOpenAI(scripted) as server:
        stage = LLMPunctuation(backend=OpenAIOptions(base_url=server.base_url, model="qwen", timeout_s=0.3,
                                                     max_retries=1, backoff_s=0.01))
        stage.setup()
        out = stage(table())
    return {r["id"]: r for r in out.to_pylist()}, server


def test_accepted_restoration_replaces_text_and_keeps_whisper_text(pnc_out):
    rows, _ = pnc_out
    assert rows["good"]["text"] == "Hello world how are you." and rows["good"]["text_asr"] == "hello world how are you"
    assert rows["good"]["flags"] == []
    assert rows["french"]["text"] == f"Tu viens demain{NBSP}? Oui."  # normalised for French


@pytest.mark.parametrize("rid, flag", [("changed", "pnc:words_changed"), ("shout", "pnc:upper_case"),
                                       ("empty", "pnc:empty"), ("fail500", "pnc:call_failed"),
                                       ("badjson", "pnc:call_failed"), ("slow", "pnc:call_failed")])
def test_refused_restoration_keeps_the_original_and_flags(pnc_out, rid, flag):
    rows, _ = pnc_out
    original = dict((r, t) for r, _, t in ROWS)[rid]
    assert rows[rid]["text"] == original and rows[rid]["text_asr"] is None
    assert rows[rid]["flags"] == [flag] and rows[rid]["drop_reason"] is None


def test_pnc_never_loses_or_rejects_rows(pnc_out):
    rows, server = pnc_out
    assert sorted(rows) == sorted(r for r, _, _ in ROWS)
    assert [r for r in rows if rows[r]["drop_reason"]] == ["rejected"]
    sent = {lf.user_text(b) for b in server.bodies}
    assert "privet mir" not in sent and "already rejected row" not in sent  # other language; rejected row
    assert rows["russian"]["text"] == "privet mir" and rows["russian"]["flags"] == []


def test_pnc_with_tiny_random_model_keeps_text_and_flags():
    stage = LLMPunctuation(backend=TransformersOptions(model=str(lf.tiny_model_dir()), batch_size=4),
                           max_new_tokens=24)
    texts = ["the morning train was late again", "please remember to feed the cat", "heute morgen habe ich"]
    out = stage(make_table([{"id": str(i), "recording_id": "r", "lang": "de" if i == 2 else "en", "text": t}
                            for i, t in enumerate(texts)])).to_pylist()
    assert [r["text"] for r in out] == texts
    assert all(r["text_asr"] is None for r in out)
    assert all(len(r["flags"]) == 1 and r["flags"][0] in ("pnc:words_changed", "pnc:empty", "pnc:upper_case")
               for r in out)


def test_set_up_stage_pickles_without_its_engine():
    stage = LLMPunctuation(backend=OpenAIOptions(base_url="http://127.0.0.1:9/v1", model="m"))
    stage.setup()
    clone = pickle.loads(pickle.dumps(stage))
    assert clone._backend is None and clone.backend == stage.backend


def test_run_info_and_models():
    stage = LLMPunctuation(langs=["en", "fr"])
    info = stage.run_info()
    assert "qwen2.5-7b-instruct via vllm" in info["punctuation"] and info["langs"] == ["en", "fr"]
    assert set(info["prompts_sha256"]) == {"en", "fr"}
    assert stage.models() == ["qwen2.5-7b-instruct"]
    remote = LLMPunctuation(backend={"name": "openai", "base_url": "http://h:8000/v1", "model": "q"})
    assert remote.models() == ["openai:q"] and remote.run_info()["backend"]["base_url"] == "http://h:8000/v1"
    with pytest.raises(ValueError, match="unknown language"):
        LLMPunctuation(langs=["xx"])


# ============================================================================= pnc.none and config

def test_pnc_none_keeps_whisper_punctuation_and_says_so():
    t = make_table([{"id": "a", "recording_id": "a", "lang": "en", "text": "hello world"}])
    assert NoPunctuation()(t).to_pylist()[0]["text"] == "hello world"
    assert NoPunctuation().run_info() == {"punctuation": "Whisper's own; no LLM restoration"}


def test_config_errors_name_the_backend_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nstages:\n  - use: pnc.llm\n    params:\n      backend: {name: openai, model: q}\n")
    with pytest.raises(ConfigError, match=r"stages\.0\.params\.backend\.openai\.base_url"):
        load_pipeline(path)
    path.write_text("name: x\nstages:\n  - use: pnc.none\n  - use: pnc.llm\n"
                    "    params: {backend: {name: vllm, model: qwen2.5-7b-instruct}, langs: [en]}\n"
                    "    resources: {gpus: 1}\n")
    _, stages = load_pipeline(path)
    assert [s.name for s in stages] == ["pnc.none", "pnc.llm"] and stages[1].resources.gpus == 1
