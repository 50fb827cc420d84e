"""Language-ID resolution, decodes that dropped content, and the greedy second pass.

The decision logic is tested with scripted decoder outputs (which candidate agrees, which scores
best); the behaviour on real audio with the bundled Whisper base on espeak-ng speech: a listing's
language settles a recording the audio alone cannot, a segment whose first decode dropped most
of its words is decoded again in pieces, and ``pass1: greedy`` fills ``pass1_text``.
"""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from granary_pipe.schema import SAMPLE_RATE_HZ
from granary_pipe.stages.asr import lid_resolve, redecode, whisper_runtime
from granary_pipe.stages.asr.two_pass import WhisperTwoPass
from granary_pipe.stages.asr.whisper_runtime import Hypothesis
from granary_pipe.stages.segment.rows import merge_regions

try:
    from tests import audio_fixtures as af
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    import audio_fixtures as af

OPTS = lid_resolve.LidResolve()
MIN_PROB = 0.5


# ----------------------------------------------------------------- decision logic


def test_when_the_audio_alone_is_not_enough():
    assert not lid_resolve.needs_resolution({"en": 0.9, "de": 0.05}, None, OPTS, MIN_PROB)
    assert lid_resolve.needs_resolution({"en": 0.45, "de": 0.05}, None, OPTS, MIN_PROB)  # under min_prob
    assert lid_resolve.needs_resolution({"cs": 0.55, "sk": 0.35}, None, OPTS, MIN_PROB)  # a close runner-up
    assert lid_resolve.needs_resolution({"en": 0.9, "de": 0.05}, "de", OPTS, MIN_PROB)  # the listing says otherwise
    assert not lid_resolve.needs_resolution({"en": 0.9, "de": 0.05}, "en", OPTS, MIN_PROB)


def test_candidates_are_the_top_audio_languages_and_the_hint():
    dist = {"cs": 0.4, "sk": 0.3, "pl": 0.2, "el": 0.01, "ru": 0.09}
    assert lid_resolve.candidates(dist, None, OPTS) == ["cs", "sk", "pl"]
    assert lid_resolve.candidates(dist, "uk", OPTS) == ["cs", "sk", "pl", "uk"]
    assert lid_resolve.candidates({"en": 0.99, "de": 0.001}, None, OPTS) == ["en"]


def test_hint_codes():
    assert lid_resolve.hint_code("pt-BR") == "pt" and lid_resolve.hint_code("en") == "en"
    assert lid_resolve.hint_code("xx") is None and lid_resolve.hint_code(None) is None


class FakeTextLID:
    """Text language ID that believes the first word of a hypothesis (``"de: ..."``)."""

    def disagrees(self, text: str, lang: str, opts) -> bool:
        said = text.split(":", 1)[0]
        return said != "??" and said != lang


@pytest.fixture
def scripted(monkeypatch):
    """``whisper_runtime.transcribe`` answering from a table: forced language → (text, avg_logprob)."""
    table: dict[str, tuple[str, float]] = {}

    def transcribe(model, chunks, language, beam_size=5, task="transcribe", max_new_tokens=None, encoded=None):
        text, score = table[language]
        return [Hypothesis(text, score, 1.2, 0.01) for _ in range(len(encoded))]

    monkeypatch.setattr(whisper_runtime, "transcribe", transcribe)
    return table


def resolve(dist, hint=None):
    return lid_resolve.resolve(dist, hint, [np.zeros(4, np.float32)], None, FakeTextLID(), OPTS)


def test_the_audio_choice_stands_unless_another_language_decodes_clearly_better(scripted):
    scripted.update({"cs": ("cs: text", -0.83), "sk": ("sk: text", -0.85), "pl": ("pl: text", -1.03)})
    d = resolve({"cs": 0.45, "sk": 0.24, "pl": 0.17})
    assert (d.lang, d.reason) == ("cs", None) and "lang:confirmed" in d.flags
    scripted["sk"] = ("sk: text", -0.60)  # better, but within the switch margin (0.3)
    assert resolve({"cs": 0.45, "sk": 0.24, "pl": 0.17}).lang == "cs"
    scripted["sk"] = ("sk: text", -0.45)
    d = resolve({"cs": 0.45, "sk": 0.24, "pl": 0.17})
    assert (d.lang, d.reason) == ("sk", None) and "lang:resolved:cs->sk" in d.flags
    assert d.prob == pytest.approx(0.24)


def test_a_candidate_whose_text_is_in_another_language_is_out(scripted):
    # forced to Portuguese the model answers in English: that decode cannot be chosen
    scripted.update({"pt": ("en: and", -0.2), "es": ("es: texto", -0.7)})
    d = resolve({"pt": 0.3, "es": 0.2})
    assert d.lang == "es" and d.reason is None


def test_text_too_short_to_judge_cannot_disagree(scripted):
    scripted.update({"en": ("??: 1, 2, 3", -0.3), "de": ("??: 1, 2, 3", -0.9)})
    assert resolve({"en": 0.4, "de": 0.35}).lang == "en"


def test_the_listing_language_stands_while_its_decode_is_credible(scripted):
    scripted.update({"cs": ("cs: text", -0.40), "pl": ("pl: text", -0.85), "sk": ("sk: text", -0.80)})
    d = resolve({"cs": 0.6, "sk": 0.3}, hint="pl")
    assert d.lang == "pl" and "lang:hint" in d.flags
    scripted["pl"] = ("pl: text", -1.6)  # not credible: the audio's choice stands
    assert resolve({"cs": 0.6, "sk": 0.3}, hint="pl").lang == "cs"
    scripted["pl"] = ("cs: text", -0.3)  # forced to Polish it writes Czech: not the listing's language
    assert resolve({"cs": 0.6, "sk": 0.3}, hint="pl").lang == "cs"


def test_no_credible_candidate_is_rejected(scripted):
    scripted.update({"en": ("de: x", -0.3), "de": ("en: y", -0.3)})
    d = resolve({"en": 0.4, "de": 0.4})
    assert d.reason == "lang:no_agreement" and d.flags
    scripted.update({"en": ("en: x", -1.6), "de": ("de: y", -1.8)})
    assert resolve({"en": 0.4, "de": 0.4}).reason == "lang:no_agreement"


# ----------------------------------------------------------------- real audio


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    sentences = ["The library opens at nine in the morning on weekdays.",
                 "After lunch we walked along the river to the old bridge.",
                 "My brother fixed the bicycle with a new chain and two tyres.",
                 "In the evening the children read stories to their grandmother."]
    clips = [af.espeak_16k(s, d) for s in sentences]
    gap = af.silence(0.9)
    long_audio = np.concatenate([x for c in clips for x in (c, gap)])[: -gap.size]
    pl = af.espeak_16k("Wczoraj wieczorem poszliśmy do kina, a potem zjedliśmy kolację w małej restauracji.", d, "pl")
    return {"sentences": sentences, "long": long_audio, "pl": pl}


@pytest.fixture(scope="module")
def stage():
    s = WhisperTwoPass(models_by_lang={"default": "whisper-base"}, lid_model="whisper-base", pass1="greedy")
    s.setup()
    return s


def test_a_decode_that_dropped_content_is_decoded_again_in_pieces(stage, speech):
    audio = speech["long"]
    assert audio.size / SAMPLE_RATE_HZ > 12
    row = af.audio_row(audio, "long")
    row.update(lang="en", text="The library opens.", drop_reason=None)  # what a decoder that stopped early left
    rows = [row]
    stage._redecode(rows, [0], whisper_runtime.load("whisper-base", "auto", "int8", 0), "en")
    out = rows[0]
    assert any(f.startswith("asr:redecoded:") for f in out["flags"]), out["flags"]
    ref = " ".join(speech["sentences"])
    assert jiwer.wer(af.words(ref), af.words(out["text"])) < 0.25, out["text"]
    assert out["pass1_text"] and jiwer.wer(af.words(ref), af.words(out["pass1_text"])) < 0.35


def test_a_complete_decode_is_left_alone(stage, speech):
    row = af.audio_row(speech["long"], "long")
    row.update(lang="en", text=" ".join(speech["sentences"]), drop_reason=None)
    rows = [row]
    stage._redecode(rows, [0], whisper_runtime.load("whisper-base", "auto", "int8", 0), "en")
    assert rows[0]["text"] == " ".join(speech["sentences"]) and not rows[0].get("flags")


def test_char_rate_floor_and_pieces():
    assert redecode.char_rate("ab cd", 2.0) == 2.0
    assert redecode.floor_for("zh", redecode.Redecode()) < redecode.floor_for("en", redecode.Redecode())
    sr = SAMPLE_RATE_HZ
    regions = [(0, 4 * sr), (5 * sr, 9 * sr), (10 * sr, 14 * sr), (15 * sr, 40 * sr)]
    # redecode's pieces: consecutive regions grouped up to max_piece_s, a longer region alone
    assert merge_regions(regions, 12 * sr, 12 * sr) == [(0, 9 * sr), (10 * sr, 14 * sr), (15 * sr, 40 * sr)]


def test_pass1_greedy_is_a_second_hypothesis(stage, speech):
    rows = [af.audio_row(speech["long"][: 6 * SAMPLE_RATE_HZ], "short")]
    out = stage(af.table(rows)).to_pylist()[0]
    assert out["lang"] == "en" and out["text"] and out["pass1_text"]
    assert jiwer.wer(af.words(out["text"]), af.words(out["pass1_text"])) < 0.3


def test_listing_language_settles_a_recording(stage, speech):
    row = af.audio_row(speech["pl"], "pl")
    row["lang_hint"] = "pl"
    out = stage(af.table([row])).to_pylist()[0]
    assert out["lang"] == "pl" and out["drop_reason"] is None, (out["lang"], out["flags"])
