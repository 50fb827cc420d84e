"""asr.language_id and asr.whisper with the real bundled models (Whisper base, Whisper tiny.en).

Each model loads once for the module (``whisper_runtime.load`` caches per process; the
module-scoped fixtures call ``setup()`` once). Inputs are the bundled demo clips, whose language
and reference text are known. Model outputs are checked only for robust facts: the right
language with probability > 0.5, WER below 0.15 on clean synthetic English, non-empty text.
"""

from __future__ import annotations

import math

import jiwer
import numpy as np
import pytest
from pydantic import ValidationError

from granary_pipe.config import ConfigError, load_pipeline
from granary_pipe.schema import SAMPLE_RATE_HZ
from granary_pipe.stages.asr import whisper_runtime
from granary_pipe.stages.asr.language_id import WhisperLanguageID, average, spread
from granary_pipe.stages.asr.transcribe import WhisperTranscribe
from granary_pipe.stages.audio.decode import decode_file


def combine(probs: list[dict[str, float]], weights: list[float]) -> tuple[str, float]:
    """The language :func:`average` puts first, with its probability."""
    dist = average(probs, weights)
    lang = max(dist, key=dist.get)
    return lang, dist[lang]

try:
    from tests import audio_fixtures as af
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    import audio_fixtures as af

SR = SAMPLE_RATE_HZ
LISTING = af.demo_listing()


@pytest.fixture(scope="module")
def clips():
    """Decoded demo clips: name → 16 kHz float32."""
    names = ["en_01.flac", "en_04.mp3", "en_06.flac", "de_01.flac", "de_04.wav", "es_01.flac", "it_01.flac"]
    return {n: decode_file(str(af.demo_clip(n)), 120)[0] for n in names}


@pytest.fixture(scope="module", autouse=True)
def base_model():
    """Whisper base, loaded once for the module (the stages below share it through the cache)."""
    WhisperLanguageID(lid_model="whisper-base", compute_type="int8").setup()
    return whisper_runtime.load("whisper-base", "auto", "int8", 0)


@pytest.fixture(scope="module")
def asr():
    stage = WhisperTranscribe(models_by_lang={"en": "whisper-tiny.en", "default": "whisper-base"}, beam_size=5,
                              compute_type="int8")
    stage.setup()
    return stage


def wer(ref: str, hyp: str) -> float:
    return jiwer.wer(af.words(ref), af.words(hyp) or "<empty>")


def mixed_recording(clips, order=("de_01.flac", "en_01.flac", "de_04.wav")):
    """One recording of three segments whose languages disagree (de, en, de by offset)."""
    rows, offset = [], 0.0
    for i, name in enumerate(order):
        rows.append(af.audio_row(clips[name], "mix", seg=i, offset_s=offset))
        offset += clips[name].size / SR + 1.0
    return rows


# ============================================================================= language ID: pure functions

def test_spread():
    assert spread(0, 3) == []
    assert spread(2, 3) == [0, 1]
    assert spread(3, 3) == [0, 1, 2]
    assert spread(5, 1) == [2]
    assert spread(10, 2) == [0, 9]
    for n in range(1, 40):
        for k in range(1, 17):
            idx = spread(n, k)
            assert len(idx) == min(n, k), (n, k)
            assert idx == sorted(set(idx)) and all(0 <= i < n for i in idx)
            if 1 < k < n:
                assert idx[0] == 0 and idx[-1] == n - 1  # first and last windows always seen


def test_combine_weights_by_duration():
    lang, prob = combine([{"en": 0.9, "de": 0.1}, {"en": 0.2, "de": 0.8}], [1.0, 3.0])
    assert lang == "de" and prob == pytest.approx((0.1 * 1 + 0.8 * 3) / 4)
    lang, prob = combine([{"en": 0.9, "de": 0.1}, {"en": 0.2, "de": 0.8}], [3.0, 1.0])
    assert lang == "en" and prob == pytest.approx((0.9 * 3 + 0.2 * 1) / 4)
    assert combine([{"it": 0.7, "es": 0.3}], [5.0]) == ("it", pytest.approx(0.7))
    # a language missing from one window counts as 0 there
    lang, prob = combine([{"es": 1.0}, {"pt": 1.0}], [1.0, 1.0])
    assert prob == pytest.approx(0.5)
    # zero total weight does not divide by zero
    assert combine([{"en": 0.6}], [0.0])[1] == 0.0


# ============================================================================= language ID: model

def test_language_id_on_demo_clips(clips):
    # allowed_langs leaves English out: its recording is rejected as unsupported, the rest kept
    stage = WhisperLanguageID(lid_model="whisper-base", windows=3, min_prob=0.5, allowed_langs=["de", "es", "it"])
    names = ["de_01.flac", "es_01.flac", "it_01.flac", "en_01.flac"]
    rows = [af.audio_row(clips[n], n.split(".")[0]) for n in names]
    rows.append(af.recording_row("/x.wav", rid="bad", drop_reason="decode_error: no such file: /x.wav"))
    out = {r["recording_id"]: r for r in stage(af.table(rows)).to_pylist()}
    assert len(out) == len(rows)
    for n in names:
        row = out[n.split(".")[0]]
        assert row["lang"] == LISTING[n]["lang"], (n, row["lang"])
        assert 0.5 < row["lang_prob"] <= 1.0 + 1e-6
        expected = None if row["lang"] in stage.allowed_langs else f"lang:unsupported:{row['lang']}"
        assert row["drop_reason"] == expected
    assert out["en_01"]["drop_reason"] == "lang:unsupported:en"
    bad = out["bad"]
    assert bad["lang"] is None and bad["drop_reason"].startswith("decode_error")


@pytest.fixture(scope="module")
def mixed_window_probs(clips, base_model):
    """Per-window language distributions of the mixed recording's three segments, and their weights."""
    names = ["de_01.flac", "en_01.flac", "de_04.wav"]
    probs = whisper_runtime.language_probs(base_model, [clips[n][: 30 * SR] for n in names])
    return probs, [clips[n].size / SR for n in names]


def test_windows_that_disagree_are_averaged_by_duration(clips, mixed_window_probs):
    probs, weights = mixed_window_probs
    assert [max(p, key=p.get) for p in probs] == ["de", "en", "de"]
    expected_lang, expected_prob = combine(probs, weights)
    assert expected_lang == "de"  # two German windows (8.6 s) outweigh one English one (5.7 s)
    # the English window pulls the recording's confidence below that of its German windows
    assert expected_prob < min(probs[0]["de"], probs[2]["de"]) and expected_prob < 0.98
    # set the threshold just above: every segment of the recording is rejected, language still recorded
    stage = WhisperLanguageID(lid_model="whisper-base", windows=3, min_prob=expected_prob + 0.02,
                              resolve={"enabled": False})
    rows = mixed_recording(clips)
    out = stage(af.table(rows[::-1])).to_pylist()  # order of rows in the batch does not matter
    assert len(out) == 3
    assert {r["lang"] for r in out} == {"de"}
    for r in out:
        assert r["lang_prob"] == pytest.approx(expected_prob, abs=1e-3)
        assert r["drop_reason"] == "lang:low_confidence"


def test_one_window_is_the_middle_segment_by_offset(clips):
    stage = WhisperLanguageID(lid_model="whisper-base", windows=1, min_prob=0.0)
    rows = mixed_recording(clips)  # de, en, de by offset: the middle one is English
    out = stage(af.table([rows[2], rows[0], rows[1]])).to_pylist()
    assert {r["lang"] for r in out} == {"en"}


class FakeLID:
    """Stands in for Whisper: each chunk's language distribution is chosen by its first sample."""

    TABLE = {1: {"en": 0.55, "de": 0.45}, 2: {"en": 0.95, "de": 0.05}, 3: {"fr": 0.9, "en": 0.1}}

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, model, chunks=None, encoded=None):
        items = chunks if chunks is not None else encoded
        self.calls.append(len(items))
        return [dict(self.TABLE[int(c[0])]) for c in items]


def fake_encode(model, chunks):
    """Stand-in encoder output: each chunk's marker sample, so the fake LID can read it back."""
    return np.stack([c[:1] for c in chunks])


@pytest.fixture
def fake_lid(monkeypatch):
    fake = FakeLID()
    monkeypatch.setattr(whisper_runtime, "load", lambda *a, **k: object())
    monkeypatch.setattr(whisper_runtime, "language_probs", fake)
    monkeypatch.setattr(whisper_runtime, "encode", fake_encode)
    return fake


def marked(code: int, seconds: float = 1.0) -> np.ndarray:
    audio = np.zeros(int(seconds * SR), np.float32)
    audio[0] = code
    return audio


def test_min_prob_threshold_and_allowed_langs_logic(fake_lid):
    rows = [af.audio_row(marked(1), "weak"), af.audio_row(marked(2), "strong"), af.audio_row(marked(3), "french")]
    stage = WhisperLanguageID(min_prob=0.6, allowed_langs=["en", "de"], resolve={"enabled": False})
    out = {r["id"]: r for r in stage(af.table(rows)).to_pylist()}
    assert out["weak"]["drop_reason"] == "lang:low_confidence"
    assert out["weak"]["lang"] == "en" and out["weak"]["lang_prob"] == pytest.approx(0.55)
    assert out["strong"]["drop_reason"] is None and out["strong"]["lang_prob"] == pytest.approx(0.95)
    assert out["french"]["drop_reason"] == "lang:unsupported:fr"
    # a probability equal to the threshold passes
    out = WhisperLanguageID(min_prob=0.55, resolve={"enabled": False})(af.table([rows[0]])).to_pylist()
    assert out[0]["drop_reason"] is None


def test_windows_are_batched_and_capped(fake_lid):
    # 20 segments of one recording, 5 windows, model_batch 2: 5 chunks in batches of ≤ 2
    rows = [af.audio_row(marked(2), "r", seg=i, offset_s=float(i)) for i in range(20)]
    rows.append(af.audio_row(marked(3, 40.0), "long"))
    out = WhisperLanguageID(windows=5, model_batch=2, resolve={"enabled": False})(af.table(rows)).to_pylist()
    assert sum(fake_lid.calls) == 6 and max(fake_lid.calls) <= 2
    assert {r["lang"] for r in out if r["recording_id"] == "r"} == {"en"}
    assert [r["lang"] for r in out if r["recording_id"] == "long"] == ["fr"]


def test_language_id_needs_a_multilingual_model(clips):
    model = whisper_runtime.load("whisper-tiny.en", "auto", "int8", 0)
    with pytest.raises(ValueError, match="multilingual"):
        whisper_runtime.language_probs(model, [clips["en_01.flac"]])


# ============================================================================= transcription

@pytest.fixture(scope="module")
def transcribed(asr, clips):
    rows = [
        af.audio_row(clips["en_01.flac"], "e1", lang="en"),
        af.audio_row(clips["en_04.mp3"], "e4", lang="en"),
        af.audio_row(clips["de_01.flac"], "d1", lang="de"),
        af.recording_row("/x.wav", rid="bad", lang="en", drop_reason="license:unknown"),
    ]
    return {r["id"]: r for r in asr(af.table(rows)).to_pylist()}


@pytest.mark.parametrize(("rid", "clip"), [("e1", "en_01.flac"), ("e4", "en_04.mp3")])
def test_english_with_tiny_en_is_accurate(transcribed, rid, clip):
    row = transcribed[rid]
    assert row["asr_model"] == "whisper-tiny.en"
    assert wer(LISTING[clip]["text"], row["text"]) < 0.15, row["text"]


def test_german_with_base(transcribed):
    row = transcribed["d1"]
    assert row["asr_model"] == "whisper-base"
    assert row["text"].strip() and any(ch.isalpha() for ch in row["text"])
    assert row["drop_reason"] is None


def test_decoder_scores_are_sane(transcribed):
    for rid in ("e1", "e4", "d1"):
        row = transcribed[rid]
        for key in ("avg_logprob", "compression_ratio", "no_speech_prob"):
            assert row[key] is not None and math.isfinite(row[key]), (rid, key)
        assert row["avg_logprob"] <= 0.0
        assert 0.0 <= row["no_speech_prob"] <= 1.0
        assert row["compression_ratio"] > 0.0
        assert row["samples"] is not None  # audio still travels to the sink


def test_rejected_rows_are_not_transcribed(transcribed):
    bad = transcribed["bad"]
    assert bad["text"] is None and bad["asr_model"] is None and bad["drop_reason"] == "license:unknown"


def test_segment_longer_than_whisper_window_is_not_silently_cut(asr, clips):
    # segment.silero allows max_segment_s up to 40 s, but Whisper sees 30 s: a 39 s segment must
    # either be transcribed whole or be rejected with a reason, never keep a 30 s transcript.
    audio = clips["en_06.flac"]
    assert audio.size / SR > 35
    row = asr(af.table([af.audio_row(audio, "long", lang="en")])).to_pylist()[0]
    if row["drop_reason"] is None:
        assert wer(LISTING["en_06.flac"]["text"], row["text"]) < 0.15, row["text"]


def test_english_only_model_for_another_language_is_a_config_error(tmp_path):
    with pytest.raises(ValidationError) as info:
        WhisperTranscribe(models_by_lang={"de": "whisper-tiny.en", "default": "whisper-base"})
    msg = str(info.value)
    assert "English-only" in msg and "whisper-tiny.en" in msg and "'de'" in msg
    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: p\nstages:\n  - use: asr.whisper\n    params:\n"
                    "      models_by_lang: {de: whisper-tiny.en, default: whisper-base}\n")
    with pytest.raises(ConfigError) as cinfo:
        load_pipeline(pipe)
    assert "stages.0.params.models_by_lang" in str(cinfo.value) and "English-only" in str(cinfo.value)


def test_english_only_path_model_for_another_language_fails_at_run_time(clips):
    """A model given by path is only known to be English-only once loaded."""
    from granary_pipe import models

    stage = WhisperTranscribe(models_by_lang={"de": str(models.resolve("whisper-tiny.en")), "default": "whisper-base"})
    with pytest.raises(ValueError) as info:
        stage(af.table([af.audio_row(clips["de_04.wav"], "d", lang="de")]))
    assert "English-only" in str(info.value) and "'de'" in str(info.value)


def test_models_by_lang_needs_a_default(tmp_path):
    with pytest.raises(ValidationError) as info:
        WhisperTranscribe(models_by_lang={"en": "whisper-tiny.en"})
    assert "default" in str(info.value)
    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: p\nstages:\n  - use: asr.whisper\n    params:\n      models_by_lang: {en: whisper-tiny.en}\n")
    with pytest.raises(ConfigError) as cinfo:
        load_pipeline(pipe)
    assert "stages.0.params.models_by_lang" in str(cinfo.value) and "default" in str(cinfo.value)
    assert f"{pipe}:5:" in str(cinfo.value)


def test_model_for_and_models():
    stage = WhisperTranscribe(models_by_lang={"en": "whisper-tiny.en", "default": "whisper-base"})
    assert stage.model_for("en") == "whisper-tiny.en"
    assert stage.model_for("fr") == "whisper-base"
    assert stage.models() == ["whisper-base", "whisper-tiny.en"]


def test_runtime_batch_matches_single(clips):
    # batching segments of different lengths (padded to 30 s) gives each the same text as alone
    model = whisper_runtime.load("whisper-tiny.en", "auto", "int8", 0)
    a, b = clips["en_01.flac"], clips["en_04.mp3"]
    together = whisper_runtime.transcribe(model, [a, b], "en", beam_size=1)
    alone = [whisper_runtime.transcribe(model, [x], "en", beam_size=1)[0] for x in (a, b)]
    assert [h.text for h in together] == [h.text for h in alone]
    feats = whisper_runtime.features(model, [a, np.zeros(SR, np.float32)])
    assert feats.shape[0] == 2 and feats.shape[-1] == whisper_runtime.N_FRAMES


def test_two_pass_equals_language_id_then_whisper(clips, asr):
    """asr.two_pass reuses pass-1 encoder outputs; its rows must equal the two separate stages'."""
    from granary_pipe.stages.asr.two_pass import WhisperTwoPass

    rows = [af.audio_row(clips[n], n.split(".")[0]) for n in ("en_01.flac", "de_01.flac", "es_01.flac", "it_01.flac")]
    rows += mixed_recording(clips)
    lid = WhisperLanguageID(lid_model="whisper-base", compute_type="int8")
    fused = WhisperTwoPass(models_by_lang={"en": "whisper-tiny.en", "default": "whisper-base"}, beam_size=5,
                           compute_type="int8")
    keys = ("id", "lang", "lang_prob", "text", "avg_logprob", "drop_reason", "asr_model")
    separate = asr(lid(af.table(rows))).sort_by("id").select(list(keys)).to_pylist()
    together = fused(af.table(rows)).sort_by("id").select(list(keys)).to_pylist()
    assert [r["text"] for r in together] == [r["text"] for r in separate]
    for a, b in zip(separate, together):
        assert a["lang"] == b["lang"] and a["drop_reason"] == b["drop_reason"] and a["asr_model"] == b["asr_model"]
        assert math.isclose(a["lang_prob"], b["lang_prob"], rel_tol=1e-5)
        if a["avg_logprob"] is not None:
            assert math.isclose(a["avg_logprob"], b["avg_logprob"], rel_tol=1e-4, abs_tol=1e-4)
    assert {r["lang"] for r in together} >= {"en", "de", "es", "it"}
    assert fused.models() == ["whisper-base", "whisper-tiny.en"]


def test_timestamp_mode_decodes_as_whisper_transcribe_does(clips):
    """``timestamps: true`` is the published way's decode (WhisperModel.transcribe, beam 5, the
    language given): the same text on a real-voice clip, no timestamp token in it, and the
    timestamp tokens counted in avg_logprob as transcribe counts them. On the real-speech split
    this one setting is the whole difference between pass 2 and the published way
    (benchmarks/README.md)."""
    model = whisper_runtime.load("whisper-base", "auto", "int8", 0)
    audio = clips["de_01.flac"]
    segs, _ = model.transcribe(audio, language="de", beam_size=5, temperature=0.0)
    segs = list(segs)
    stamped = whisper_runtime.transcribe(model, [audio], "de", beam_size=5, timestamps=True)[0]
    assert stamped.text == " ".join(s.text.strip() for s in segs)
    assert "<|" not in stamped.text
    if len(segs) == 1:
        assert math.isclose(stamped.avg_logprob, segs[0].avg_logprob, abs_tol=1e-3)
    plain = whisper_runtime.transcribe(model, [audio], "de", beam_size=5)[0]
    assert plain.avg_logprob > stamped.avg_logprob  # timestamp tokens are the decoder's least sure ones
    stage = WhisperTranscribe(models_by_lang={"default": "whisper-base"}, timestamps=True, compute_type="int8")
    row = stage(af.table([af.audio_row(audio, "d", lang="de")])).to_pylist()[0]
    assert row["text"] == stamped.text
    assert WhisperTranscribe().timestamps is False
