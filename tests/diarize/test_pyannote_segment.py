"""segment.pyannote on tiny random pyannote.audio models (run in .venv-diarize: make test-diarize).

The models' weights are random, so their speaker activity is arbitrary: these tests check the
row contract (segments partition speech into valid, ordered, single-speaker rows within the
recording, each ≤ max_segment_s, with well-formed ids and speaker labels, samples matching
durations, rejected rows passed through), not diarization quality. Exact splitting and merging is
checked with speaker turns given by hand (``speaker_turns`` monkeypatched). No speech is forced
with ``threshold=1.0`` for a bare model (activity never exceeds 1) and by monkeypatching the
pipeline's turns to none.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch

import audio_fixtures as af
from granary_pipe import models, registry
from granary_pipe.schema import make_table
from granary_pipe.stages.segment import pyannote as pyseg
from granary_pipe.stages.segment.pyannote import MISSING_EXTRA, PyannoteSegment

SR = 16_000
SPEAKER = re.compile(r"SPEAKER_\d{2}")
RANDOM_PIPELINE_WARNINGS = [  # a random embedding model on short chunks, clustering that finds 1 speaker
    "ignore:std\\(\\):UserWarning",
    "ignore:Mean of empty slice:RuntimeWarning",
    "ignore:invalid value encountered:RuntimeWarning",
    "ignore:\\s*The detected number of speakers:UserWarning",
]
REJECTED = {"id": "gone", "recording_id": "gone", "source": "test", "audio_path": "/nowhere.wav",
            "offset_s": 0.0, "license": "CC-BY-4.0", "drop_reason": "decode_error: no such file: /nowhere.wav"}


def run(stage: PyannoteSegment, rows: list[dict]) -> list[dict]:
    return stage(af.table(rows)).to_pylist()


def check_contract(rows: list[dict], audio: np.ndarray, rid: str, max_segment_s: float) -> list[dict]:
    """Assert the segment-row contract for recording ``rid``; return its rows."""
    mine = [r for r in rows if r["recording_id"] == rid]
    assert mine, f"no rows for {rid}"
    if len(mine) == 1 and mine[0]["drop_reason"] is not None:
        check_no_speech(mine[0], rid, audio)
        return mine
    assert [r["id"] for r in mine] == [f"{rid}_{i:04d}" for i in range(len(mine))]
    af.assert_segments_tile(mine, audio, max_segment_s)  # ordered; no two segments overlap (any speaker)
    first_seen: list[str] = []
    for r in mine:
        assert SPEAKER.fullmatch(r["speaker"]), r["speaker"]
        if r["speaker"] not in first_seen:
            first_seen.append(r["speaker"])
        assert (r["source"], r["license"]) == ("test", "CC-BY-4.0")  # recording fields carried
    assert first_seen == [f"SPEAKER_{i:02d}" for i in range(len(first_seen))]  # named by first appearance
    return mine


def check_no_speech(row: dict, rid: str, audio: np.ndarray) -> None:
    assert row["id"] == rid and row["drop_reason"] == "segment:no_speech"
    assert row["samples"] is None and row["speaker"] is None
    assert row["duration_s"] == pytest.approx(audio.size / SR)  # the recording's, still reported


def check_rejected_untouched(rows: list[dict]) -> None:
    gone = [r for r in rows if r["recording_id"] == "gone"]
    assert gone == make_table([REJECTED], with_samples=True).to_pylist()


# ----------------------------------------------------------------------------- the tiny models

def test_tiny_checkpoint_loads_with_model_from_pretrained(builder, tiny_powerset_ckpt):
    from pyannote.audio import Model
    from pyannote.audio.models.segmentation import PyanNet

    loaded = Model.from_pretrained(tiny_powerset_ckpt)
    assert isinstance(loaded, PyanNet)
    spec = loaded.specifications
    assert spec.duration == builder.SEGMENTATION_DURATION_S and spec.powerset
    assert len(spec.classes) == builder.NUM_LOCAL_SPEAKERS and spec.permutation_invariant
    fresh = builder.tiny_segmentation(powerset=True, seed=0)  # same seed → same weights
    x = torch.randn(2, 1, int(spec.duration * SR), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.eval()(x), fresh(x))


def test_registered_as_actor_and_validated():
    assert registry.get("segment.pyannote") is PyannoteSegment
    assert PyannoteSegment.actor is True
    assert PyannoteSegment(model="x").models() == ["x"]
    with pytest.raises(ValueError, match="max_segment_s"):
        PyannoteSegment(max_segment_s=31)
    with pytest.raises(ValueError, match="threshhold"):
        PyannoteSegment(threshhold=0.3)


# ----------------------------------------------------------------------------- bare segmentation model

@pytest.mark.parametrize("which,max_segment_s", [("powerset", 30.0), ("powerset-dir", 4.0), ("multilabel", 3.0)])
def test_segmentation_model_rows_keep_the_contract(which, max_segment_s, two_voices, tiny_powerset_ckpt,
                                                   tiny_multilabel_ckpt):
    audio, _ = two_voices
    model = {"powerset": tiny_powerset_ckpt, "powerset-dir": tiny_powerset_ckpt.parent,
             "multilabel": tiny_multilabel_ckpt}[which]
    stage = PyannoteSegment(model=str(model), max_segment_s=max_segment_s, min_segment_s=0.2)
    stage.setup()
    assert type(stage._runner).__name__ == "_ModelRunner"
    silence = af.silence(2.0)
    rows = run(stage, [af.audio_row(audio, "talk"), REJECTED, af.audio_row(silence, "quiet")])
    talk = check_contract(rows, audio, "talk", max_segment_s)
    check_contract(rows, silence, "quiet", max_segment_s)
    check_rejected_untouched(rows)
    assert len(rows) == len(talk) + len([r for r in rows if r["recording_id"] == "quiet"]) + 1
    assert stage.models() == [str(model)]
    info = stage.run_info()
    assert info["kind"] == "model" and info["pyannote.audio"].startswith("4.")
    assert "not clustered" in info["speaker_labels"]


def test_threshold_one_means_no_speech(two_voices, tiny_powerset_ckpt):
    audio, _ = two_voices
    stage = PyannoteSegment(model=str(tiny_powerset_ckpt), threshold=1.0)
    rows = run(stage, [REJECTED, af.audio_row(audio, "talk")])  # setup() on first use
    assert len(rows) == 2
    check_no_speech(next(r for r in rows if r["recording_id"] == "talk"), "talk", audio)
    check_rejected_untouched(rows)


def test_stitch_aligns_swapped_local_speakers():
    # chunk 1 is chunk 0 shifted by 2 frames with its two local speakers swapped
    act = np.zeros((12, 2), np.float32)
    act[:6, 0] = 1
    act[6:, 1] = 1
    chunk0, chunk1 = act[0:8], act[2:10][:, ::-1]
    stitched = pyseg.stitch_chunks(np.stack([chunk0, chunk1]), shift_frames=2)
    np.testing.assert_array_equal(stitched[0], chunk0)
    np.testing.assert_array_equal(stitched[1], act[2:10])
    # chunks that do not overlap are left as they are
    np.testing.assert_array_equal(pyseg.stitch_chunks(np.stack([chunk0, chunk1]), shift_frames=8)[1], chunk1)


def test_local_speakers_are_stitched_across_chunks(tone_model_ckpt):
    # "speakers" are tones the test model tells apart; it swaps its local speakers in some
    # chunks, as a permutation-invariant model may: only stitching keeps the labels straight
    from tone_model import HIGH_HZ, LOW_HZ

    layout = [(0.5, 3.5, LOW_HZ), (4.0, 7.0, HIGH_HZ), (7.5, 10.5, LOW_HZ), (11.0, 14.0, HIGH_HZ),
              (14.5, 16.0, LOW_HZ)]
    audio = af.silence(17.0)
    for start, end, hz in layout:
        audio[round(start * SR) : round(end * SR)] = af.tone(end - start, freq_hz=hz, amp=0.3)
    stage = PyannoteSegment(model=str(tone_model_ckpt), max_segment_s=30.0, max_merge_gap_s=0.2)
    rows = check_contract(run(stage, [af.audio_row(audio, "tones")]), audio, "tones", 30.0)
    assert len(rows) == len(layout)  # one segment per tone, none bridging a 0.5 s pause
    for r, (start, end, hz) in zip(rows, layout):
        assert r["offset_s"] == pytest.approx(start, abs=0.1)
        assert r["offset_s"] + r["duration_s"] == pytest.approx(end, abs=0.1)
        assert r["speaker"] == ("SPEAKER_00" if hz == LOW_HZ else "SPEAKER_01")
    # the model really does swap local speakers in some chunks: aggregated without stitching,
    # the first low tone is smeared over two local speakers (else this test proves nothing)
    from pyannote.audio import Inference, Model
    from pyannote.core import Segment

    unstitched = Inference(Model.from_pretrained(tone_model_ckpt), step=0.5,
                           pre_aggregation_hook=lambda chunks: chunks)(pyseg._waveform(audio))
    first_low = unstitched.crop(Segment(1.0, 3.0))
    assert first_low[:, 0].max() > 0.1 and first_low[:, 1].max() > 0.1


# ----------------------------------------------------------------------------- pyannote pipeline

@pytest.mark.filterwarnings(*RANDOM_PIPELINE_WARNINGS)
def test_pipeline_rows_keep_the_contract(two_voices, tiny_pipeline_dir):
    audio, _ = two_voices
    stage = PyannoteSegment(model=str(tiny_pipeline_dir), max_segment_s=5.0, min_segment_s=0.2)
    stage.setup()
    assert type(stage._runner).__name__ == "_PipelineRunner"
    rows = run(stage, [REJECTED, af.audio_row(audio, "talk")])
    check_contract(rows, audio, "talk", 5.0)
    assert stage.run_info()["kind"] == "pipeline"
    assert stage.run_info()["file"] == str(tiny_pipeline_dir / "config.yaml")
    check_rejected_untouched(rows)


@pytest.mark.filterwarnings(*RANDOM_PIPELINE_WARNINGS)
def test_pipeline_by_yaml_path_and_by_registry_env(monkeypatch, two_voices, tiny_pipeline_dir):
    audio, _ = two_voices
    short = audio[: 6 * SR]
    monkeypatch.setenv("GRANARY_MODEL_TINY_DIARIZATION", str(tiny_pipeline_dir))
    for model in (str(tiny_pipeline_dir / "config.yaml"), "tiny-diarization"):
        stage = PyannoteSegment(model=model, num_speakers=2)
        stage.setup()
        assert type(stage._runner).__name__ == "_PipelineRunner"
        assert stage._runner.call_kwargs == {"num_speakers": 2}
        check_contract(run(stage, [af.audio_row(short, "s")]), short, "s", 30.0)


@pytest.mark.filterwarnings(*RANDOM_PIPELINE_WARNINGS)
def test_pipeline_with_no_turns_rejects_no_speech(monkeypatch, two_voices, tiny_pipeline_dir):
    audio, _ = two_voices
    stage = PyannoteSegment(model=str(tiny_pipeline_dir))
    stage.setup()
    monkeypatch.setattr(stage._runner, "turns", lambda audio: [])
    rows = run(stage, [af.audio_row(audio, "talk"), REJECTED])
    check_no_speech(rows[0], "talk", audio)
    check_rejected_untouched(rows)


# ----------------------------------------------------------------------------- turns → rows, exactly

def test_known_turns_become_rows(monkeypatch, two_voices):
    audio, _ = two_voices
    n_s = audio.size / SR
    turns = [  # seconds, unsorted, overlapping, one past the end, one too short, one too long
        (7.0, 9.0, "B"),
        (0.5, 3.0, "A"),
        (2.5, 4.0, "B"),  # overlaps A: A keeps the floor until 3.0
        (4.5, 5.0, "B"),  # 0.5 s pause after B's previous turn: merged
        (5.0, 5.1, "A"),  # 0.1 s < min_segment_s: dropped
        (9.5, n_s + 3, "C"),  # clipped to the recording, then cut in two ≤ 5 s
    ]
    monkeypatch.setattr(PyannoteSegment, "speaker_turns", lambda self, a: turns)
    stage = PyannoteSegment(model="unused", max_segment_s=5.0, max_merge_gap_s=1.0, min_segment_s=0.25)
    rows = run(stage, [af.audio_row(audio, "k"), REJECTED])
    got = [(r["id"], round(r["offset_s"], 4), round(r["offset_s"] + r["duration_s"], 4), r["speaker"])
           for r in rows if r["recording_id"] == "k"]
    c_mid = round((9.5 * SR + (audio.size - 9.5 * SR) // 2) / SR, 4)
    assert got == [
        ("k_0000", 0.5, 3.0, "SPEAKER_00"),   # A
        ("k_0001", 3.0, 5.0, "SPEAKER_01"),   # B, 3.0-4.0 + 4.5-5.0 merged
        ("k_0002", 7.0, 9.0, "SPEAKER_01"),   # B again, after a 2 s pause > max_merge_gap_s
        ("k_0003", 9.5, c_mid, "SPEAKER_02"),  # C, cut in equal halves ≤ 5 s
        ("k_0004", c_mid, round(n_s, 4), "SPEAKER_02"),
    ]
    assert n_s - 9.5 > 5.0
    check_contract(rows, audio, "k", 5.0)
    check_rejected_untouched(rows)


def test_empty_audio_and_missing_samples(monkeypatch):
    monkeypatch.setattr(PyannoteSegment, "speaker_turns",
                        lambda self, a: pytest.fail("no model call for empty audio"))
    empty = af.audio_row(np.zeros(0, np.float32), "empty")
    no_samples = {k: v for k, v in af.audio_row(af.silence(1.0), "nos").items() if k != "samples"}
    rows = run(PyannoteSegment(model="unused"), [empty, no_samples])
    assert [(r["id"], r["drop_reason"]) for r in rows] == [("empty", "segment:no_speech"),
                                                           ("nos", "segment:no_audio")]


@pytest.mark.filterwarnings(*RANDOM_PIPELINE_WARNINGS)
@pytest.mark.parametrize("kind", ["model", "pipeline"])
def test_very_short_recordings_never_crash(kind, tiny_pipeline_dir):
    model = tiny_pipeline_dir / "segmentation" if kind == "model" else tiny_pipeline_dir
    stage = PyannoteSegment(model=str(model), kind=kind, min_segment_s=0.0)
    rng = np.random.default_rng(0)
    for n in (1, 50, 500, 4000):
        audio = (0.3 * rng.standard_normal(n)).astype(np.float32)
        check_contract(run(stage, [af.audio_row(audio, "short")]), audio, "short", 30.0)
    # shorter than min_segment_s: no segment could be kept, the model is not even asked
    stage = PyannoteSegment(model="unused", min_segment_s=0.25)
    stage._runner = "not a runner"  # any call to it would fail
    rows = run(stage, [af.audio_row(af.tone(0.2), "blip")])
    assert [(r["id"], r["drop_reason"]) for r in rows] == [("blip", "segment:no_speech")]


# ----------------------------------------------------------------------------- errors

def test_missing_extra_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyannote.audio", None)  # `import pyannote.audio` now fails
    with pytest.raises(ImportError, match=re.escape(MISSING_EXTRA)):
        PyannoteSegment(model="unused").setup()


def test_unresolvable_model_says_how_to_give_one(tmp_path, tiny_pipeline_dir):
    with pytest.raises(models.ModelNotFound, match="GRANARY_MODEL_NO_SUCH_PIPELINE"):
        PyannoteSegment(model="no-such-pipeline").setup()
    with pytest.raises(models.ModelNotFound, match="neither config.yaml"):
        PyannoteSegment(model=str(tmp_path)).setup()
    with pytest.raises(models.ModelNotFound, match="holds no pytorch_model.bin"):
        PyannoteSegment(model=str(tiny_pipeline_dir), kind="model").setup()
    stage = PyannoteSegment(model=str(tiny_pipeline_dir / "segmentation"), kind="model")
    stage.setup()
    assert type(stage._runner).__name__ == "_ModelRunner"
