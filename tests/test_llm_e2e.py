"""``pnc.llm`` and ``translate.llm`` inside real runs: ``granary run`` on an embedded local Ray, then
``granary release``, once per LLM backend a CPU machine can run:

- ``transformers`` on the tiny random Qwen2 of ``llm_fixtures`` (garbage output: the guards refuse
  most of it, flagging ``pnc:``/``translate:`` per row; the release holds what they let through);
- ``openai`` against ``llm_server.py``, a separate server process on 127.0.0.1 whose answers pass
  the guards, so the release carries restored punctuation and German translations.

The pipeline: decode → license gate → Silero VAD → Whisper base (both passes) → pnc.llm →
translate.llm (en → de) over three short espeak-ng English clips. Ray starts once for the module;
``granary run`` finds it running and leaves it up for the next run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from granary_pipe import cli
from granary_pipe.text import normalize

try:
    from tests import audio_fixtures as af
    from tests import llm_fixtures as lf
    from tests import llm_server
    from tests.fault_helpers import rows, run_json, write_pipeline, write_source
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    import audio_fixtures as af
    import llm_fixtures as lf
    import llm_server
    from fault_helpers import rows, run_json, write_pipeline, write_source

pytestmark = pytest.mark.e2e

CLIPS = {
    "weather": "the weather was cold and windy this morning",
    "river": "we walked along the river after lunch",
    "window": "please close the window before you leave",
}
"""Clip name → what espeak-ng says (2-4 s each; no digits or apostrophes, so words compare plainly)."""

ASR_STAGES = [
    {"use": "audio.decode", "resources": {"cpus": 0.25}},
    {"use": "license.gate", "resources": {"cpus": 0.25}},
    {"use": "segment.silero", "params": {"max_segment_s": 30, "min_silence_duration_ms": 500, "speech_pad_ms": 200},
     "resources": {"cpus": 0.25}},
    {"use": "asr.two_pass", "params": {"lid_model": "whisper-base", "windows": 1, "beam_size": 1,
                                       "models_by_lang": {"default": "whisper-base"}, "compute_type": "int8",
                                       "model_batch": 8},
     "resources": {"cpus": 0.5}},
]


def llm_stages(pnc_backend: dict, mt_backend: dict, max_new_tokens: int = 1024) -> list[dict]:
    """pnc.llm (English) and translate.llm (en → de) on the given backends."""
    return [
        {"use": "pnc.llm", "params": {"backend": pnc_backend, "langs": ["en"], "max_new_tokens": max_new_tokens},
         "resources": {"cpus": 0.25}},
        {"use": "translate.llm", "params": {"backend": mt_backend, "targets": {"en": "de"},
                                            "max_new_tokens": max_new_tokens},
         "resources": {"cpus": 0.25}},
    ]


@pytest.fixture(scope="module")
def local_ray():
    """One embedded Ray for every run of the module (``granary run`` uses it and leaves it up)."""
    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A source of three espeak-ng English clips under CC-BY-4.0."""
    d = tmp_path_factory.mktemp("llm-src")
    (d / "audio").mkdir()
    for name, text in CLIPS.items():
        af.espeak(text, d / "audio" / f"{name}.wav")
    return write_source(d, [(f"audio/{name}.wav", {"lang": "en"}) for name in CLIPS], name="espeak-en")


def run_and_release(out: Path, source: Path, stages: list[dict]) -> tuple[Path, list[dict], list[dict]]:
    """``granary run`` then ``granary release``; returns the run dir, its kept rows and the release's
    Parquet rows."""
    pipeline = write_pipeline(out / "pipeline.yaml", ASR_STAGES + stages, per_unit=4, in_flight=1, attempts=1,
                              name="llm-e2e")
    run = out / "run"
    assert cli.main(["run", str(pipeline), "--source", str(source), "--out", str(run), "-q"]) == 0
    assert cli.main(["release", str(run), "--out", str(out / "rel"), "-q"]) == 0
    released = [r for f in sorted((out / "rel").glob("parquet/*/*.parquet")) for r in pq.read_table(f).to_pylist()]
    return run, rows(run, "kept"), released


def check_run_json(run: Path, backend: str, model_key: str, model_id: str) -> dict:
    """run.json: complete, both LLM stages name the backend and model that ran, the model's license
    is the declared one."""
    info = run_json(run)
    assert info["status"] == "complete" and info["failed_units"] == [], info["unit_errors"]
    for stage in ("pnc.llm", "translate.llm"):
        ran = info["stage_info"][stage]["backend"]
        assert ran["name"] == backend and ran["model_license"] == "Apache-2.0", ran
    assert info["stage_info"]["pnc.llm"]["backend"]["model"] == model_id
    model = info["models"][model_key]
    assert model["license"] == "Apache-2.0" and model["license_source"] == "declared", model
    assert model["stage"] in ("pnc.llm", "translate.llm") and model["license_param"] == "backend.model_license"
    assert info["models"]["whisper-base"]["license_source"] == "registry"
    return info


def check_rows_carried(kept: list[dict], released: list[dict]) -> None:
    """Every clip is a kept English row; the release holds exactly those rows with their texts,
    flags and translations."""
    assert len(kept) == len(CLIPS) and {r["lang"] for r in kept} == {"en"}, [(r["id"], r["text"]) for r in kept]
    fields = ("text", "text_asr", "flags", "translation", "translation_lang")
    assert {r["id"]: tuple(r[f] for f in fields) for r in released} == \
           {r["id"]: tuple(r[f] for f in fields) for r in kept}


# ----------------------------------------------------------------------------- transformers, tiny random model

@pytest.fixture(scope="module")
def transformers_run(local_ray, source, tmp_path_factory):
    backend = {"name": "transformers", "model": str(lf.tiny_model_dir()), "model_license": "Apache-2.0",
               "batch_size": 4, "cpu_threads": 1}
    return run_and_release(tmp_path_factory.mktemp("llm-tf"), source, llm_stages(backend, backend, 24))


def test_transformers_backend_runs_and_run_json_says_so(transformers_run):
    run, _, _ = transformers_run
    info = check_run_json(run, "transformers", str(lf.tiny_model_dir()), str(lf.tiny_model_dir()))
    assert len(info["models"][str(lf.tiny_model_dir())]["sha256"]) == 64  # a local model: weights hashed


def test_transformers_garbage_is_judged_row_by_row_and_released_as_judged(transformers_run):
    """Every row either keeps Whisper's text with a ``pnc:`` flag or carries a restoration with the
    same words; either has no translation and a ``translate:`` flag or carries one in German. The
    guards refuse most of the tiny model's garbage; the release holds what they let through."""
    _, kept, released = transformers_run
    check_rows_carried(kept, released)
    for r in kept:
        pnc = [f for f in r["flags"] if f.startswith("pnc:")]
        mt = [f for f in r["flags"] if f.startswith("translate:")]
        if pnc:
            assert pnc[0] in ("pnc:words_changed", "pnc:empty", "pnc:upper_case") and r["text_asr"] is None, r
        else:
            assert r["text_asr"] and normalize(r["text"], r["lang"]) == normalize(r["text_asr"], r["lang"]), r
        if mt:
            assert r["translation"] is None and r["translation_lang"] is None, r
        else:
            assert r["translation"] and r["translation_lang"] == "de", r
    assert sum(any(f.startswith("pnc:") for f in r["flags"]) for r in kept) >= 2, [r["flags"] for r in kept]
    assert sum(any(f.startswith("translate:") for f in r["flags"]) for r in kept) >= 1, [r["flags"] for r in kept]


# ----------------------------------------------------------------------------- openai, a server process

@pytest.fixture(scope="module")
def openai_run(local_ray, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("llm-api")
    log = out / "requests.jsonl"
    with llm_server.served(log) as url:
        common = {"name": "openai", "base_url": url, "model_license": "Apache-2.0", "timeout_s": 20,
                  "max_retries": 1, "concurrency": 2}
        stages = llm_stages({**common, "model": "stand-in-pnc"}, {**common, "model": "stand-in-mt"})
        run, kept, released = run_and_release(out, source, stages)
    requests = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return run, kept, released, url, requests


def test_openai_backend_runs_and_run_json_says_so(openai_run):
    run, _, _, url, _ = openai_run
    info = check_run_json(run, "openai", "openai:stand-in-pnc", "stand-in-pnc")
    for key, stage in (("openai:stand-in-pnc", "pnc.llm"), ("openai:stand-in-mt", "translate.llm")):
        model = info["models"][key]
        assert model["base_url"] == url and model["stage"] == stage and "sha256" not in model, model
    assert info["stage_info"]["translate.llm"]["backend"]["base_url"] == url


def test_openai_restored_text_and_translations_are_released(openai_run):
    run, kept, released, _, requests = openai_run
    check_rows_carried(kept, released)
    for r in kept:
        assert r["text_asr"], r  # Whisper's text, kept where PNC changed it
        assert r["text"] == llm_server.restore(r["text_asr"]) and normalize(r["text"], r["lang"]) == normalize(r["text_asr"], r["lang"])
        assert [f for f in r["flags"] if f.startswith(("pnc:", "translate:"))] == [], r["flags"]
        assert r["translation"] == llm_server.TRANSLATIONS["German"] and r["translation_lang"] == "de"
    # each kept row went to the server once per task: Whisper's text for PNC, the restored text to translate
    assert sorted(q["text"] for q in requests if q["task"] == "pnc") == sorted(r["text_asr"] for r in kept)
    assert sorted(q["text"] for q in requests if q["task"] == "translate") == sorted(r["text"] for r in kept)
    rel = json.loads((run.parent / "rel" / "release.json").read_text())
    assert rel["models"]["openai:stand-in-mt"]["license"] == "Apache-2.0"
    assert "base_url" not in rel["models"]["openai:stand-in-mt"]  # where the curator serves it stays private
