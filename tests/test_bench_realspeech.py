"""The real-speech split of the label-quality benchmark: build, errors, the oracle's table row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import devset_real  # noqa: E402
import label_quality as lq  # noqa: E402
from label_metrics import FileResult, Row  # noqa: E402


def _src(tmp_path: Path, clips: list[dict]) -> Path:
    src = tmp_path / "realspeech"
    (src / "clips").mkdir(parents=True)
    for c in clips:
        sf.write(src / c["file"], np.zeros(8000, dtype=np.float32), 16000, format="FLAC")
    (src / "manifest.jsonl").write_text("".join(json.dumps(c) + "\n" for c in clips))
    return src


CLIPS = [{"file": "clips/de_a.flac", "lang": "de", "text": "guten tag", "license": "CC-BY-4.0"},
         {"file": "clips/en_b.flac", "lang": "en", "text": "HELLO THERE", "license": "LicenseRef-PublicDomain"}]


def test_build_real_writes_listing_sidecars_and_copies(tmp_path):
    corpus = tmp_path / "corpus"
    truths = devset_real.build_real(corpus, _src(tmp_path, CLIPS))
    assert [t["path"] for t in truths] == ["audio/real/de_a.flac", "audio/real/en_b.flac"]
    side = json.loads((corpus / "audio/real/de_a.flac.truth.json").read_text())
    assert side["clean"] and side["split"] == "real" and side["refs"] == ["guten tag"] and side["seconds"] == 0.5
    listing = [json.loads(x) for x in (corpus / "real.jsonl").read_text().splitlines()]
    assert listing[1] == {"path": "audio/real/en_b.flac", "text": "HELLO THERE", "lang": "en", "license": "public-domain"}
    assert "lang" not in json.loads((corpus / "real-nohint.jsonl").read_text().splitlines()[0])
    assert (corpus / "audio/real/de_a.flac").stat().st_ino != (tmp_path / "realspeech/clips/de_a.flac").stat().st_ino
    assert lq.load_truth(corpus, "real")["audio/real/de_a.flac"]["lang"] == "de"
    # reused when unchanged, rebuilt when the manifest changes
    stamp = (corpus / "audio/real/BUILD.json").stat().st_mtime_ns
    devset_real.build_real(corpus, tmp_path / "realspeech")
    assert (corpus / "audio/real/BUILD.json").stat().st_mtime_ns == stamp
    _src(tmp_path / "again", CLIPS[:1])
    assert len(devset_real.build_real(corpus, tmp_path / "again" / "realspeech")) == 1


@pytest.mark.parametrize("line, message", [
    ("{not json", "manifest.jsonl:1:2: not valid JSON"),
    (json.dumps({"file": "clips/x.flac", "lang": "de"}), "manifest.jsonl:1: clip lacks text, license"),
    (json.dumps({"file": "clips/x.flac", "lang": "de", "text": "a", "license": "MIT"}), "x.flac: audio file not found"),
])
def test_bad_manifest_names_file_and_line(tmp_path, line, message):
    (tmp_path / "manifest.jsonl").write_text(line + "\n")
    with pytest.raises(SystemExit, match=message):
        devset_real.read_manifest(tmp_path)
    with pytest.raises(SystemExit, match="real-speech manifest not found; pass --real-dir"):
        devset_real.read_manifest(tmp_path / "nowhere")


def _file(path: str, lang: str, ref: str, kept: str | None) -> FileResult:
    truth = {"kind": "speech", "lang": lang, "refs": [ref], "clean": True, "license_ok": True, "seconds": 3.0}
    f = FileResult(path, truth)
    (f.kept if kept else f.rejected).append(Row(0.0, 3.0, kept or "das ist gut", lang, None if kept else "x:y"))
    return f


def test_table_shows_oracle_per_language_and_usable_labels_lost(tmp_path, capsys):
    truths = {"a.flac": _file("a", "de", "das ist gut", "x").truth, "b.flac": _file("b", "es", "muy bien", "x").truth}
    oracle = [lq.oracle_result(tmp_path, "a.flac", truths["a.flac"], ["das ist gut"]),
              lq.oracle_result(tmp_path, "b.flac", truths["b.flac"], ["nada que ver aqui"])]
    pipeline = [_file("a.flac", "de", "das ist gut", None), _file("b.flac", "es", "muy bien", "muy bien")]
    t = {"wall_s": 1.0, "audio_s": 6.0}
    lq.print_table("real", {"pipeline": (pipeline, t), "oracle": (oracle, t)})
    out = capsys.readouterr().out
    lost = next(x for x in out.splitlines() if x.startswith("usable labels lost"))
    assert lost.split()[-6:] == ["1", "/", "1", "0", "/", "1"]  # a.flac lost by the pipeline; b.flac unusable
    de = next(x for x in out.splitlines() if x.startswith("WER of kept, de"))
    assert de.split()[-3:] == ["-", "0.000", "(1)"]  # the pipeline kept no German; the oracle did
