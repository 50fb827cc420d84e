"""segment.pyannote's pure turn → segment logic, in the main environment (no torch, no pyannote).

The stage itself runs in the ``[diarize]`` environment: ``make test-diarize`` (tests/diarize).
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from granary_pipe.stages.segment.pyannote import PyannoteSegment, turns_to_segments


def test_turns_split_at_speaker_changes_and_merge_per_speaker_up_to_max():
    sr = 100  # samples per second, to keep the numbers readable
    turns = [  # unsorted; overlapping; a blip; one turn longer than the maximum
        (1200, 1400, "B"),
        (0, 300, "A"),
        (250, 500, "B"),    # overlaps A: A keeps the floor until 300
        (550, 700, "B"),    # 0.5 s after B's previous turn: merged with it
        (700, 710, "A"),    # 0.1 s: dropped (< min_len)
        (800, 1000, "B"),   # 1 s pause: merged, still within max_len
        (1500, 2600, "C"),  # 11 s: cut into two equal halves
    ]
    segments = turns_to_segments(turns, max_len=8 * sr, max_gap=1 * sr, min_len=sr // 4)
    assert segments == [
        (0, 300, "A"),
        (300, 1000, "B"),
        (1200, 1400, "B"),  # 2 s after the previous B segment: not merged (gap > max_gap)
        (1500, 2050, "C"),
        (2050, 2600, "C"),
    ]
    # the contract: ordered, non-overlapping, single-speaker, each within max_len
    for (s, e, _), (s2, _, _) in pairwise(segments):
        assert s < e <= s2
    assert all(e - s <= 8 * sr for s, e, _ in segments)
    # a merge never reaches across another speaker, even within max_gap
    assert turns_to_segments([(0, 10, "A"), (10, 20, "B"), (20, 30, "A")], max_len=100, max_gap=100) == [
        (0, 10, "A"), (10, 20, "B"), (20, 30, "A")]
    assert turns_to_segments([], max_len=100) == []


def test_without_the_diarize_extra_setup_names_the_fix():
    try:
        import pyannote.audio  # noqa: F401
    except Exception:  # the main environment: not installed (or broken beside its torch)
        pass
    else:
        pytest.skip("pyannote.audio is importable here; tests/diarize covers this case")
    with pytest.raises(ImportError, match=r"^segment\.pyannote needs the \[diarize\] extra: make diarize-env \("):
        PyannoteSegment(model="anything").setup()
    # run.json info needs no torch either, and names an unresolvable model instead of failing
    info = PyannoteSegment(model="no-such-model").run_info()
    assert info["pyannote.audio"] is None and "no-such-model" in info["model_error"]
