"""audio.decode and segment.silero, called directly on tiny tables.

Decode: good inputs in many shapes decode to 16 kHz mono with the right length and probe fields;
every broken input becomes a rejected row whose ``decode_error: ...`` says what is wrong.
Segment: silence is rejected as ``segment:no_speech``; espeak-ng speech with pauses is cut into
ordered segments no longer than ``max_segment_s`` whose samples are the recording's.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from granary_pipe.schema import SAMPLE_RATE_HZ, make_table
from granary_pipe.stages.audio.decode import Decode, DecodeError, decode_file
from granary_pipe.stages.segment.silero import SileroSegment, merge_regions

try:
    from tests import audio_fixtures as af
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    import audio_fixtures as af

SR = SAMPLE_RATE_HZ


# ============================================================================= decode

@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    """name → (path, expected duration s, source rate, channels, codec names accepted)."""
    d = tmp_path_factory.mktemp("good")
    out = {}
    out["flac16k"] = (af.write_audio(d / "mono.flac", af.tone(2.0), SR, "FLAC"), 2.0, SR, 1, {"flac"})
    eight_ch = np.stack([af.tone(1.5, 48_000, 200 + 100 * c, 0.1) for c in range(8)], axis=1)
    out["wav8ch48k"] = (af.write_audio(d / "eight.wav", eight_ch, 48_000, "WAV", "PCM_16"), 1.5, 48_000, 8,
                        {"pcm_s16le"})
    out["wav8k"] = (af.write_audio(d / "narrow.wav", af.tone(2.5, 8_000), 8_000, "WAV", "PCM_16"), 2.5, 8_000, 1,
                    {"pcm_s16le"})
    stereo = np.stack([af.tone(1.2, 44_100, 300), af.tone(1.2, 44_100, 500)], axis=1)
    out["ogg44k"] = (af.write_audio(d / "stereo.ogg", stereo, 44_100, "OGG", "VORBIS"), 1.2, 44_100, 2,
                     {"vorbis", "libvorbis"})
    out["wav24bit"] = (af.write_audio(d / "deep.wav", af.tone(1.0, 22_050), 22_050, "WAV", "PCM_24"), 1.0, 22_050, 1,
                       {"pcm_s24le"})
    spaced = d / "a dir with spaces" / "ünï cødé – file.wav"
    spaced.parent.mkdir()
    out["unicode"] = (af.write_audio(spaced, af.tone(1.0), SR, "WAV"), 1.0, SR, 1, {"pcm_s16le"})
    speech = af.espeak("Testing one two three.", d / "speech.wav")
    out["espeak"] = (speech, sf.info(speech).duration, sf.info(speech).samplerate, 1, {"pcm_s16le"})
    for name, codec, rate in [("en_02.opus", {"opus"}, 48_000), ("de_02.mp3", {"mp3", "mp3float"}, None),
                              ("de_04.wav", {"pcm_s16le"}, None)]:
        path = af.demo_clip(name)
        out[name] = (path, None, rate, 1, codec)
    return out


def test_good_inputs_decode_to_16k_mono_with_probe_fields(good_files):
    rows = [af.recording_row(path, rid=name.replace(".", "_")) for name, (path, *_rest) in good_files.items()]
    out = {r["id"]: r for r in Decode()(make_table(rows)).to_pylist()}
    assert len(out) == len(rows)
    for name, (path, seconds, rate, channels, codecs) in good_files.items():
        row = out[name.replace(".", "_")]
        assert row["drop_reason"] is None, (name, row["drop_reason"])
        audio = af.samples_of(row)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01, name
        assert row["duration_s"] == pytest.approx(audio.size / SR)
        assert row["recording_duration_s"] == row["duration_s"]
        if seconds is not None:
            assert row["duration_s"] == pytest.approx(seconds, rel=0.01), name
        if rate is not None:
            assert row["source_sample_rate_hz"] == rate, name
        assert row["source_channels"] == channels, name
        assert row["source_codec"] in codecs, (name, row["source_codec"])
        assert row["audio_path"] == str(path)  # untouched


def test_demo_files_decode_to_their_soundfile_length():
    # formats soundfile reads natively give an independent duration
    for name in ["en_01.flac", "de_04.wav", "it_01.flac"]:
        path = af.demo_clip(name)
        audio, info = decode_file(str(path), 60)
        assert audio.size / SR == pytest.approx(sf.info(path).duration, rel=0.01)
        assert info["source_sample_rate_hz"] == sf.info(path).samplerate


def test_resampling_keeps_pitch():
    # a 1 kHz tone at 8 kHz must still be a 1 kHz tone at 16 kHz (not 2 kHz, not 500 Hz)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = af.write_audio(os.path.join(d, "t.wav"), af.tone(1.0, 8_000, 1000.0), 8_000, "WAV")
        audio, _ = decode_file(path, 10)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * SR / audio.size
    assert peak_hz == pytest.approx(1000.0, abs=5)


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory):
    """name → (path, text the reason must contain (lower case))."""
    d = tmp_path_factory.mktemp("broken dir ü")
    out = {}
    corrupt = d / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 8000, dtype=np.uint8).tobytes())
    out["corrupt"] = (corrupt, "invalid data")
    out["truncated"] = (af.truncated_flac(d / "cut.flac"), "invalid data")
    (d / "empty.flac").write_bytes(b"")
    out["empty"] = (d / "empty.flac", "empty file")
    (d / "notes.wav").write_text("this is a text file, not audio\n" * 50)
    out["text_as_wav"] = (d / "notes.wav", "invalid data")
    out["zero_frames"] = (af.write_audio(d / "zero.wav", np.zeros(0, np.float32), SR, "WAV"), "no audio samples")
    out["missing"] = (d / "does not exist.wav", "no such file")
    (d / "x.wav").mkdir()
    out["directory"] = (d / "x.wav", "directory")
    out["too_long"] = (af.write_audio(d / "long.flac", af.tone(3.0), SR, "FLAC"), "longer than max_duration_s=2")
    return out


def test_broken_inputs_become_rejected_rows(broken_files):
    rows = [af.recording_row(path, rid=name) for name, (path, _) in broken_files.items()]
    fine = af.write_audio(broken_files["empty"][0].with_name("fine.flac"), af.tone(1.5), SR, "FLAC")
    rows.append(af.recording_row(fine, rid="fine"))
    out = {r["id"]: r for r in Decode(max_duration_s=2)(make_table(rows)).to_pylist()}
    assert len(out) == len(rows)  # nothing silently dropped
    assert out["fine"]["drop_reason"] is None and out["fine"]["samples"]
    for name, (path, needle) in broken_files.items():
        row = out[name]
        reason = row["drop_reason"]
        assert reason is not None and reason.startswith("decode_error: "), (name, reason)
        assert needle in reason.lower(), (name, reason)
        assert row["samples"] is None and row["duration_s"] is None, name
        assert row["audio_path"] == str(path)
        if name != "truncated":  # see test_decode_error_mid_stream_names_the_path
            assert str(path) in reason, (name, reason)


def test_decode_error_mid_stream_names_the_path(broken_files):
    # FFmpeg errors raised while opening carry the file name; errors raised while decoding
    # ("avcodec_send_packet()") do not, so the reason of a truncated file does not say which file.
    path, _ = broken_files["truncated"]
    with pytest.raises(DecodeError) as info:
        decode_file(str(path), 100)
    assert str(path) in str(info.value)


def test_unreadable_file(tmp_path):
    path = af.write_audio(tmp_path / "locked.wav", af.tone(1.0), SR, "WAV")
    path.chmod(0)
    try:
        row = Decode()(make_table([af.recording_row(path)])).to_pylist()[0]
    finally:
        path.chmod(0o644)
    if os.geteuid() == 0:
        # root reads through mode 000: the file must then decode normally (the directory-named
        # x.wav case in test_broken_inputs_become_rejected_rows covers an OS-level read failure)
        assert row["drop_reason"] is None
        assert row["duration_s"] == pytest.approx(1.0, rel=0.01)
    else:
        assert row["drop_reason"] == f"decode_error: permission denied: {path}"


def test_already_rejected_row_passes_through_untouched(tmp_path):
    good = af.write_audio(tmp_path / "ok.flac", af.tone(1.0), SR, "FLAC")
    rejected = af.recording_row(good, rid="r1", drop_reason="license:CC-BY-NC-4.0", lang_hint="en")
    before = make_table([rejected]).to_pylist()[0]
    out = {r["id"]: r for r in Decode()(make_table([rejected, af.recording_row(good, rid="r2")])).to_pylist()}
    after = out["r1"]
    after.pop("samples")
    assert after == before
    assert out["r2"]["drop_reason"] is None and out["r2"]["duration_s"] == pytest.approx(1.0, rel=0.01)


def test_decode_stage_output_has_work_schema():
    from granary_pipe.schema import WORK_SCHEMA

    out = Decode()(make_table([af.recording_row(af.demo_clip("es_01.flac"))]))
    assert out.schema == WORK_SCHEMA


# ============================================================================= segment

SENTENCES = [
    "The morning train was late again, so I bought a coffee at the station.",
    "My sister likes to read in the garden when the weather is warm.",
    "We need to leave early tomorrow because the roads will be busy.",
    "Please remember to feed the cat while we are away on holiday.",
    "Every Saturday my family walks to the market at the end of our street.",
    "After lunch we walk back home along the river and feed the ducks.",
    "In the afternoon the market closes and the street is quiet again.",
]
GAP_S = 2.0
LEAD_S = 1.0


@pytest.fixture(scope="module")
def speech_with_pauses(tmp_path_factory):
    """(audio, [(start_s, end_s) of each spoken clip]): espeak sentences with 2 s silences, > 30 s."""
    d = tmp_path_factory.mktemp("speech")
    parts, spans, t = [af.silence(LEAD_S)], [], LEAD_S
    for text in SENTENCES:
        clip = af.espeak_16k(text, d)
        parts += [clip, af.silence(GAP_S)]
        spans.append((t, t + clip.size / SR))
        t += clip.size / SR + GAP_S
    audio = np.concatenate(parts)
    assert audio.size / SR > 30
    return audio, spans


@pytest.fixture(scope="module")
def segmented_default(speech_with_pauses):
    audio, _ = speech_with_pauses
    stage = SileroSegment()
    row = af.audio_row(audio, "corp-talk-0123abcd", lang_hint="en", ref_text="ref", license="CC0-1.0")
    return stage, audio, stage(af.table([row])).to_pylist()


def check_segments(rows, audio, rid, max_segment_s):
    assert len(rows) >= 2
    assert [r["id"] for r in rows] == [f"{rid}_{i:04d}" for i in range(len(rows))]
    assert all(r["recording_id"] == rid for r in rows)
    af.assert_segments_tile(rows, audio, max_segment_s)


def test_speech_with_pauses_gives_ordered_segments(segmented_default, speech_with_pauses):
    stage, audio, rows = segmented_default
    check_segments(rows, audio, "corp-talk-0123abcd", stage.max_segment_s)
    for r in rows:  # recording fields carried to every segment
        assert (r["source"], r["license"], r["lang_hint"], r["ref_text"]) == ("test", "CC0-1.0", "en", "ref")
    # every spoken clip's middle is inside some segment
    _, spans = speech_with_pauses
    for s, e in spans:
        mid = (s + e) / 2
        assert any(r["offset_s"] <= mid <= r["offset_s"] + r["duration_s"] for r in rows), mid


def test_short_limits_split_at_every_pause(speech_with_pauses):
    audio, spans = speech_with_pauses
    rows = SileroSegment(max_segment_s=10, max_merge_gap_s=0.5)(af.table([af.audio_row(audio, "r")])).to_pylist()
    check_segments(rows, audio, "r", 10)
    assert len(rows) >= len(spans)
    # no segment bridges a 2 s pause
    for (_, e), (s, _) in zip(spans, spans[1:]):
        mid_gap = (e + s) / 2
        assert not any(r["offset_s"] < mid_gap < r["offset_s"] + r["duration_s"] for r in rows), mid_gap


def test_continuous_speech_longer_than_max_is_split(speech_with_pauses, tmp_path):
    audio, spans = speech_with_pauses
    # the clips back to back, no pauses: only the length limit can cut
    continuous = np.concatenate([audio[round(s * SR) : round(e * SR)] for s, e in spans])
    rows = SileroSegment(max_segment_s=8)(af.table([af.audio_row(continuous, "c")])).to_pylist()
    check_segments(rows, continuous, "c", 8)
    assert sum(r["duration_s"] for r in rows) > 0.8 * continuous.size / SR


def test_silence_only_is_rejected_as_no_speech():
    rng = np.random.default_rng(0)
    quiet = np.concatenate([af.silence(3.0), 1e-3 * rng.standard_normal(3 * SR).astype(np.float32)])
    row = af.audio_row(quiet, "quiet")
    out = SileroSegment()(af.table([row])).to_pylist()
    assert len(out) == 1
    assert out[0]["id"] == "quiet" and out[0]["drop_reason"] == "segment:no_speech"
    assert out[0]["samples"] is None
    assert out[0]["duration_s"] == pytest.approx(6.0)  # the recording's, still reported


def test_batch_of_recordings_and_rejected_rows(segmented_default, speech_with_pauses):
    audio, _ = speech_with_pauses
    rows = [
        af.audio_row(audio[: 12 * SR], "a"),
        af.audio_row(af.silence(2.0), "b"),
        af.recording_row("/nowhere.wav", rid="c", drop_reason="decode_error: no such file: /nowhere.wav"),
    ]
    out = SileroSegment()(af.table(rows)).to_pylist()
    by_rec: dict[str, list] = {}
    for r in out:
        by_rec.setdefault(r["recording_id"], []).append(r)
    assert set(by_rec) == {"a", "b", "c"}
    assert all(r["id"].startswith("a_") and r["drop_reason"] is None for r in by_rec["a"])
    assert [r["drop_reason"] for r in by_rec["b"]] == ["segment:no_speech"]
    assert by_rec["c"] == make_table([rows[2]], with_samples=True).to_pylist()  # untouched


def test_merge_regions_units():
    assert merge_regions([], 100, 10) == []
    assert merge_regions([(0, 10)], 100, 10) == [(0, 10)]
    # gap ≤ max_gap and span ≤ max_len: merged (both limits inclusive)
    assert merge_regions([(0, 10), (20, 30)], 30, 10) == [(0, 30)]
    # gap too large
    assert merge_regions([(0, 10), (21, 30)], 100, 10) == [(0, 10), (21, 30)]
    # span would exceed max_len
    assert merge_regions([(0, 10), (20, 31)], 30, 10) == [(0, 10), (20, 31)]
    # greedy left to right: a chain merges until the length limit, then starts afresh
    regions = [(0, 10), (15, 25), (30, 40), (45, 55), (60, 70)]
    assert merge_regions(regions, 40, 5) == [(0, 40), (45, 70)]
    # a single region longer than max_len is kept whole (the VAD caps region length)
    assert merge_regions([(0, 500), (505, 510)], 100, 10) == [(0, 500), (505, 510)]
    # max_gap 0 merges only touching regions
    assert merge_regions([(0, 10), (10, 20), (21, 30)], 100, 0) == [(0, 20), (21, 30)]


def test_segments_method_respects_max_segment(speech_with_pauses):
    audio, _ = speech_with_pauses
    stage = SileroSegment(max_segment_s=12, max_merge_gap_s=5)
    spans = stage.segments(audio)
    assert spans and all(0 <= s < e <= audio.size for s, e in spans)
    assert all(e - s <= 12 * SR for s, e in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert stage.models() == ["silero-vad"]
