"""Translation: the filters (pure), the prompt and target mapping, ``translate.llm`` against a real
local OpenAI-compatible server and a tiny real transformers model, and ``translate.whisper`` on a
bundled demo clip."""

from __future__ import annotations

import types

import numpy as np
import pytest
from pydantic import ValidationError

from granary_pipe import text_lid
from granary_pipe.llm import OpenAIOptions, TransformersOptions
from granary_pipe.schema import make_table
from granary_pipe.stages.asr import whisper_runtime
from granary_pipe.stages.audio.decode import decode_file
from granary_pipe.stages.translate import filters
from granary_pipe.stages.translate.llm import LLMTranslate, clean_translation, prompt
from granary_pipe.stages.translate.whisper import WhisperTranslate

try:
    from tests import audio_fixtures as af
    from tests import llm_fixtures as lf
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    import audio_fixtures as af
    import llm_fixtures as lf


@pytest.fixture(scope="module")
def lid():
    return text_lid.load("fasttext-lid176")


# ============================================================================= filters (pure)

def test_words_and_too_short():
    assert filters.words("Hello , world !") == ["Hello", "world"]
    assert filters.words("你好世界", "zh") == ["你", "好", "世", "界"]
    assert filters.too_short("Hallo", "Hello there", "de", "en")
    assert filters.too_short("Guten Morgen", "Hi", "de", "en")
    assert not filters.too_short("Guten Morgen", "Good morning", "de", "en")


def test_length_ratio():
    assert filters.length_ratio("a b", "a b c d e f g h") == 4.0
    assert filters.length_ratio("a b c", "x y") == 1.5
    assert filters.length_ratio("a b", "") == float("inf")
    assert filters.length_ratio("", "") == 1.0


def test_script_fraction_per_target_language():
    assert filters.script_fraction("Guten Morgen, schöne Grüße!", "de") == 1.0
    assert filters.script_fraction("Доброе утро", "ru") == 1.0
    assert filters.script_fraction("Доброе утро", "en") == 0.0
    assert filters.script_fraction("Καλημέρα", "el") == 1.0
    assert filters.script_fraction("Hello Мир", "uk") == pytest.approx(3 / 8)
    assert filters.script_fraction("こんにちは世界", "ja") == 1.0
    assert filters.script_fraction("anything", "xx") is None  # unknown language: no opinion
    assert filters.expected_scripts("bg") == {"CYRILLIC"} and filters.expected_scripts("it") == {"LATIN"}


def test_compression_ratio_and_ngram_repeats_spot_loops():
    assert filters.compression_ratio("The market is always full of people buying fruit.") < 2.4
    assert filters.compression_ratio("In the near future we will go. " * 6) > 2.4
    assert filters.max_ngram_count("The market is always full. The market is always open.") == 2
    loop = ("In the near future we will go with the farm. The name is written. In the near future we will go "
            "back home, and in the near future we will go to bed.")
    assert filters.compression_ratio(loop) < 2.4 and filters.max_ngram_count(loop) == 3
    assert filters.check_pair("Am Wochenende fahren wir gerne mit dem Fahrrad aufs Land und dann nach Hause.",
                              loop, "de", "en") == ["repetitive"]
    assert filters.max_ngram_count("too short") == 0


def test_lid_prob_uses_fasttext_codes():
    assert text_lid.lid_prob(lambda t: {"jv": 0.8}, "x", "jw") == 0.8
    assert text_lid.lid_prob(lambda t: {"en": 0.9}, "x", "de") == 0.0


def test_fasttext_lid_on_real_model(lid):
    assert lid("Heute Morgen habe ich den Bus verpasst.")["de"] > 0.9
    assert lid("This morning I missed the bus.")["en"] > 0.5
    assert lid("line one\nline two") is not None  # newlines are fine


def test_check_pair_names_every_rule(lid):
    src = "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen."
    assert filters.check_pair(src, "This morning I missed the bus and had to walk to work.", "de", "en", lid=lid) == []
    assert filters.check_pair("Hallo", "Hello", "de", "en") == ["too_short"]
    assert filters.check_pair(src, "Bus.  ok", "de", "en", lid=None) == ["length_ratio"]
    assert "charset" in filters.check_pair(src, "Сегодня утром я опоздал на автобус", "de", "en", lid=lid)
    assert filters.check_pair(src, src, "de", "en", lid=lid) == ["tgt_lang"]  # copied, not translated
    loop = "I went to the bus, " * 5
    assert "repetitive" in filters.check_pair(src, loop, "de", "en", lid=lid)
    assert filters.check_pair("This morning I missed the bus and walked.", "Heute Morgen habe ich den Bus verpasst.",
                              "fr", "de", lid=lid) == ["src_lang"]


# ============================================================================= prompt and targets

def test_language_id_judges_only_sides_with_letters(lid):
    """Numbers and symbols say nothing about a language: such a side leaves language ID out (as in
    filter.text_lang), while a real wrong-language side still fires."""
    count = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12"
    assert filters.check_pair(count, count, "de", "en", lid=lid) == []
    assert filters.check_pair("2024 – 19,99 € – 5 %", "2024 – 19,99 € – 5 %", "de", "en", lid=lid) == []
    src = "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen."
    assert filters.check_pair(src, src, "de", "en", lid=lid) == ["tgt_lang"]
    assert filters.check_pair(src, src, "de", "en", lid=lid, min_lid_letters=1000) == []  # the threshold is a param
    assert filters.check_pair("Ich zähle bis drei.", "1, 2, 3", "de", "en", lid=lid) == ["charset"]  # words lost
    assert filters.max_ngram_count("It cost 1,000,000,000,000,000,000 dollars") == 1  # one numeral, no loop


def test_eurollm_prompt():
    assert prompt("Hello there.", "en", "de") == (
        "Translate the following English source text to German:\nEnglish: Hello there.\nGerman: ")
    assert clean_translation("  German:  Hallo\n  da. ", "de") == "Hallo da."
    assert clean_translation(None, "de") is None


def test_targets_map_both_directions():
    stage = LLMTranslate()
    assert [stage.target_for(x) for x in ("en", "de", "fr", None, "xx")] == ["de", "en", "en", None, None]
    only = LLMTranslate(targets={"en": "fr"})
    assert only.target_for("en") == "fr" and only.target_for("de") is None
    assert LLMTranslate(targets={"default": "en"}).target_for("en") is None  # already English
    with pytest.raises(ValidationError, match="unknown language codes"):
        LLMTranslate(targets={"en": "klingon"})


def test_there_is_no_quality_estimation_option():
    """No quality estimation exists: ``qe_model`` is an unknown key, null or a model name."""
    assert "quality_estimation" not in LLMTranslate().run_info()["filters"]
    for value in (None, "Unbabel/wmt22-cometkiwi-da"):
        with pytest.raises(ValidationError, match="qe_model"):
            LLMTranslate(qe_model=value)


# ============================================================================= translate.llm, real local server

ROWS = [
    ("en_ok", "en", "This morning I missed the bus and had to walk to work."),
    ("de_ok", "de", "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen."),
    ("de_loop", "de", "Im Sommer gehen wir oft am Fluss spazieren und beobachten die Enten."),
    ("de_wrong", "de", "Ich trinke morgens gerne eine Tasse Tee mit etwas Honig."),
    ("de_fail", "de", "Kannst du bitte das Fenster schließen, es wird kalt?"),
    ("it_bad_json", "it", "Questa mattina ho comprato il pane fresco nel forno."),
    ("es_short", "es", "Hola"),
    ("rejected", "de", "Abgelehnte Zeile hier."),
]
ANSWERS = {
    "This morning": "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen.",
    "Heute Morgen": "This morning I missed the bus and had to walk to work.",
    "Im Sommer": "In summer we go to the river. In summer we go to the river. In summer we go to the river. "
                 "In summer we go to the river.",
    "Ich trinke": "Ich trinke morgens gerne eine Tasse Tee mit etwas Honig.",  # not translated
    "Hola": "Hello",
}


def scripted(body, attempt):
    text = lf.user_text(body)
    source = text.split("\n")[1].split(": ", 1)[1]
    if source.startswith("Kannst"):
        return lf.Reply(status=503)
    if source.startswith("Questa"):
        return lf.Reply(raw=b"<html>oops</html>")
    return lf.Reply(content=next(v for k, v in ANSWERS.items() if source.startswith(k)))


@pytest.fixture(scope="module")
def translated():
    rows = [{"id": rid, "recording_id": rid, "lang": lang, "text": text,
             "drop_reason": "filter:no_speech" if rid == "rejected" else None} for rid, lang, text in ROWS]
    with lf.FakeOpenAI(scripted) as server:
        stage = LLMTranslate(backend=OpenAIOptions(base_url=server.base_url, model="eurollm", max_retries=1,
                                                   backoff_s=0.01))
        out = stage(make_table(rows))
    return {r["id"]: r for r in out.to_pylist()}, server


def test_good_translations_both_directions(translated):
    rows, server = translated
    assert rows["en_ok"]["translation"].startswith("Heute Morgen") and rows["en_ok"]["translation_lang"] == "de"
    assert rows["de_ok"]["translation"].startswith("This morning") and rows["de_ok"]["translation_lang"] == "en"
    assert rows["en_ok"]["flags"] == [] and rows["de_ok"]["flags"] == []
    prompts = {lf.user_text(b) for b in server.bodies}
    assert prompt(ROWS[0][2], "en", "de") in prompts and prompt(ROWS[1][2], "de", "en") in prompts
    assert all(b["temperature"] == 0 for b in server.bodies)


@pytest.mark.parametrize("rid, flags", [
    ("de_loop", ["translate:repetitive"]),
    ("de_wrong", ["translate:tgt_lang"]),
    ("de_fail", ["translate:call_failed"]),
    ("it_bad_json", ["translate:call_failed"]),
    ("es_short", ["translate:too_short"]),  # one-word sides are also too short for language ID
])
def test_failed_translations_keep_the_row_and_flag(translated, rid, flags):
    rows, _ = translated
    row = rows[rid]
    assert row["translation"] is None and row["translation_lang"] is None
    assert row["flags"][: len(flags)] == flags and row["drop_reason"] is None  # first rule first
    assert row["text"] == dict((r, t) for r, _, t in ROWS)[rid]


def test_translation_never_loses_rows(translated):
    rows, server = translated
    assert sorted(rows) == sorted(r for r, _, _ in ROWS)
    assert rows["rejected"]["drop_reason"] == "filter:no_speech" and rows["rejected"]["flags"] is None
    assert not any("Abgelehnte" in lf.user_text(b) for b in server.bodies)


def test_translate_with_tiny_random_model_flags_everything():
    stage = LLMTranslate(backend=TransformersOptions(model=str(lf.tiny_model_dir()), batch_size=4),
                         max_new_tokens=24)
    rows = [{"id": rid, "recording_id": rid, "lang": lang, "text": text} for rid, lang, text in ROWS[:3]]
    out = stage(make_table(rows)).to_pylist()
    assert len(out) == 3 and all(r["drop_reason"] is None for r in out)
    assert all(r["translation"] is None and r["flags"] and all(f.startswith("translate:") for f in r["flags"])
               for r in out)


# ============================================================================= translate.whisper

def test_whisper_translation_of_a_demo_clip():
    audio = decode_file(str(af.demo_clip("de_01.flac")), 60)[0]
    listing = af.demo_listing()
    rows = [af.audio_row(audio, "de", seg=0, lang="de", text=listing["de_01.flac"]["text"]),
            af.audio_row(audio, "en", seg=0, lang="en", text="An English row is not translated."),
            {"id": "nosamples", "recording_id": "x", "lang": "de", "text": "Ohne Audio kein Übersetzen hier."}]
    stage = WhisperTranslate(cpu_threads=2)
    out = {r["id"]: r for r in stage(af.table(rows)).to_pylist()}
    de = out["de_0000"]
    assert de["drop_reason"] is None and de["translation_lang"] == "en" and de["flags"] == []
    assert "bus" in de["translation"].lower()
    assert out["en_0000"]["translation"] is None and out["en_0000"]["flags"] == []
    assert out["nosamples"]["flags"] == ["translate:no_audio"]
    assert stage.models() == ["whisper-base", "fasttext-lid176"]


@pytest.fixture()
def stub_whisper(monkeypatch):
    """Whisper replaced by scripted hypotheses (text → (translation, avg_logprob)) to test the gate."""
    monkeypatch.setattr(whisper_runtime, "load", lambda *a, **k: types.SimpleNamespace(
        model=types.SimpleNamespace(is_multilingual=True)))
    calls = []

    def fake_transcribe(model, chunks, language, beam_size=5, task="transcribe", max_new_tokens=None):
        calls.append({"language": language, "task": task, "n": len(chunks)})
        return [whisper_runtime.Hypothesis(text, logprob, 1.0, 0.01)
                for text, logprob in stub_whisper.answers[:len(chunks)]]

    monkeypatch.setattr(whisper_runtime, "transcribe", fake_transcribe)
    stub_whisper.calls = calls
    return stub_whisper


def whisper_row(rid: str) -> dict:
    return af.audio_row(np.zeros(16000, np.float32), rid, seg=0, lang="it",
                        text="Domenica andiamo al mare con gli amici e mangiamo qualcosa.")


def test_whisper_translation_loops_are_flagged(stub_whisper):
    stub_whisper.answers = [("In the near future we will go. " * 8, -0.4)]
    out = WhisperTranslate()(af.table([whisper_row("loop")])).to_pylist()[0]
    assert stub_whisper.calls == [{"language": "it", "task": "translate", "n": 1}]
    assert out["translation"] is None and "translate:repetitive" in out["flags"] and out["drop_reason"] is None


def test_whisper_low_confidence_translation_is_flagged(stub_whisper):
    fluent = "My mother was the one who cooked for all the friends on Sunday."
    stub_whisper.answers = [(fluent, -1.2)]
    out = WhisperTranslate()(af.table([whisper_row("low")])).to_pylist()[0]
    assert out["translation"] is None and out["flags"] == ["translate:low_logprob"]
    stub_whisper.answers = [(fluent, -1.2)]
    kept = WhisperTranslate(min_avg_logprob=None)(af.table([whisper_row("low")])).to_pylist()[0]
    assert kept["translation"] == fluent and kept["flags"] == []
