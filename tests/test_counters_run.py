"""Per-stage counters through a real run: every stage's rows in / rejected / flagged per rule arrive in
each unit's ``_COMMITTED`` marker and, summed, in ``run.json``, the same on Ray and on Beam; the
report reads them.

The pipeline is the cheapest real one (as ``test_resume_knobs.py``): decode → license gate → Silero
VAD → filter.basic → filter.hallucination → filter.text_lang (an actor), on three generated WAV
files in two units: speech with a pause (two segments), speech under a non-commercial license
(rejected by the gate) and silence (rejected, no speech). Without ASR the segments have no text,
so filter.basic rejects them (``filter:empty_text``) and the later filters see no row: their
declared rules are still counted, at 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from audio_fixtures import espeak_16k, silence, write_audio
from helpers_rundir import planned_units
from granary_pipe import counters, rundir
from granary_pipe.pipeline import run_pipeline
from granary_pipe.report.html import retention
from granary_pipe.report.summary import summarize
from granary_pipe.schema import SAMPLE_RATE_HZ
from granary_pipe.stages.filters.hallucination import RULE_ORDER
from granary_pipe.stages.filters.text_lang import TextLanguageFilter

STAGES = ["audio.decode", "license.gate", "segment.silero", "filter.basic", "filter.hallucination",
          "filter.text_lang"]
SAY = ["Every rule is counted as it runs.", "The marker keeps what each stage did."]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("counters_src")
    (root / "audio").mkdir()
    one, two = (espeak_16k(t, root) for t in SAY)
    write_audio(root / "audio" / "a_speech.wav", np.concatenate([silence(0.3), one, silence(1.5), two, silence(0.3)]),
                SAMPLE_RATE_HZ)
    write_audio(root / "audio" / "b_nc.wav", np.concatenate([silence(0.3), two, silence(0.3)]), SAMPLE_RATE_HZ)
    write_audio(root / "audio" / "c_silence.wav", silence(2.0), SAMPLE_RATE_HZ)
    lines = [{"path": "audio/a_speech.wav", "text": " ".join(SAY)},
             {"path": "audio/b_nc.wav", "license": "CC-BY-NC-4.0", "text": SAY[1]},
             {"path": "audio/c_silence.wav"}]
    (root / "listing.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    manifest = root / "source.yaml"
    manifest.write_text(yaml.safe_dump({"name": "counted", "license": "CC-BY-4.0", "listing": "listing.jsonl"}))
    return manifest


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> Path:
    stages = [{"use": "audio.decode", "params": {"max_duration_s": 600}},
              {"use": "license.gate"},
              {"use": "segment.silero", "params": {"max_segment_s": 30, "min_silence_duration_ms": 500,
                                                   "max_merge_gap_s": 1.0}},
              {"use": "filter.basic"}, {"use": "filter.hallucination"}, {"use": "filter.text_lang"}]
    for s in stages:
        s["resources"] = {"cpus": 0.25}
    path = tmp_path_factory.mktemp("counters_cfg") / "counted.yaml"
    units = {"recordings_per_unit": 2, "max_in_flight": 2, "max_attempts": 1}
    path.write_text(yaml.safe_dump({"name": "counted", "units": units, "stages": stages}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, source, pipeline_file) -> dict[str, tuple[Path, dict]]:
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        for executor in ("ray", "beam"):
            run = tmp_path_factory.mktemp(f"counters_{executor}") / "run"
            kw = {"num_cpus": 2} if executor == "ray" else {}
            info = run_pipeline(pipeline_file, source, run, executor=executor, progress=False, **kw)
            assert info["status"] == "complete", info.get("failed_units")
            out[executor] = (run, info)
    return out


def markers(run: Path, info: dict) -> dict[str, dict]:
    return {u: rundir.read_marker(run, u) for u in planned_units(info)}


@pytest.mark.parametrize("executor", ["ray", "beam"])
def test_every_stage_counts_into_the_marker(runs, executor):
    run, info = runs[executor]
    for unit, marker in markers(run, info).items():
        counts = marker["counts"]
        assert set(counts) == {*STAGES, "sink.write"}, unit
        # the chain holds: a stage sees what the one before let through; the first sees the unit's recordings
        chain = [counts[s] for s in STAGES + ["sink.write"]]
        assert chain[0]["rows_in"] == marker["recordings"]
        for before, after in zip(chain, chain[1:]):
            assert after["rows_in"] == before["rows_out"] - sum(before["rejected"].values()), unit
        assert sum(sum(c["rejected"].values()) for c in chain) == marker["rows_rejected"]
        assert counts["sink.write"]["rows_in"] == marker["rows_kept"]
        # declared rules are there even when they never fired or the stage saw no row
        assert set(counts["filter.hallucination"]["rejected"]) == set(RULE_ORDER)
        assert set(counts["filter.text_lang"]["flagged"]) == set(TextLanguageFilter.RULES)


@pytest.mark.parametrize("executor", ["ray", "beam"])
def test_run_json_holds_the_totals_not_the_detail(runs, executor):
    run, info = runs[executor]
    on_disk = json.loads((run / "run.json").read_text())
    total: dict = {}
    for marker in markers(run, info).values():
        total = counters.merge_stages(total, marker["counts"])
    assert on_disk["counts"] == json.loads(json.dumps(total))
    assert "units" not in on_disk and on_disk["units_total"] == on_disk["units_committed"] == len(markers(run, info))
    assert on_disk["totals"]["rows_in"] == sum(m["rows_in"] for m in markers(run, info).values())  # per unit: the marker only
    c = on_disk["counts"]
    assert c["audio.decode"]["rows_in"] == 3 and c["audio.decode"]["rejected"] == {"decode_error": 0}
    assert c["license.gate"]["rejected"] == {"license": 1} and c["license.gate"]["flagged"] == {"license": 1}
    assert c["segment.silero"]["rejected"] == {"segment:no_speech": 1}
    assert c["segment.silero"]["rows_in"] == 2 and c["segment.silero"]["rows_out"] >= 3  # a pause: 2 segments
    segments = c["segment.silero"]["rows_out"] - 1
    assert c["filter.basic"]["rows_in"] == segments
    assert c["filter.basic"]["rejected"]["filter:empty_text"] == segments  # no ASR: no text
    assert c["filter.basic"]["flagged"]["filter:empty_text"] == segments
    assert c["filter.hallucination"]["rows_in"] == 0 and c["sink.write"]["rows_in"] == 0


def test_ray_and_beam_count_the_same(runs):
    ray_counts = json.loads((runs["ray"][0] / "run.json").read_text())["counts"]
    beam_counts = json.loads((runs["beam"][0] / "run.json").read_text())["counts"]
    assert _rounded(ray_counts) == _rounded(beam_counts)  # seconds summed in another order may differ in the last bit


def _rounded(counts: dict) -> dict:
    return {s: {k: ({r: round(n, 6) for r, n in v.items()} if isinstance(v, dict) else v) for k, v in c.items()}
            for s, c in counts.items()}


def test_the_report_reads_the_counters(runs):
    run, info = runs["ray"]
    s = summarize(run)
    assert list(s["counts"]) == [*STAGES, "sink.write"]  # pipeline order
    ret = retention(s)
    assert [x["stage"] for x in ret] == ["input", *STAGES, "sink.write"]
    assert ret[-1]["rows"] == s["rows"]["kept"] == 0
    by_rule = {d["rule"]: d for d in s["rule_quality"]["rules"]}
    assert by_rule["license"]["stage"] == "license.gate" and by_rule["license"]["rows_rejected"] == 1
    assert by_rule["filter:empty_text"]["stage"] == "filter.basic"
    assert by_rule["hallucination:phrase"]["rows_rejected"] == 0  # every declared rule is measured
    assert s["rule_quality"]["rows_with_reference"] >= 3  # the listing's text reached the rows


def test_a_resumed_run_totals_every_committed_unit(runs, pipeline_file, source, tmp_path):
    """run.json's totals cover the units committed by an earlier invocation too (read from their markers)."""
    import shutil

    done, info = runs["ray"]
    run = tmp_path / "run"
    shutil.copytree(done, run)
    lost = planned_units(info)[0]
    shutil.rmtree(rundir.unit_dir(run, lost))
    resumed = run_pipeline(pipeline_file, source, run, executor="beam", progress=False)
    assert resumed["status"] == "complete"
    assert _rounded(resumed["counts"]) == _rounded(json.loads((done / "run.json").read_text())["counts"])
