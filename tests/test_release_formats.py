"""Release formats read back by the libraries users have: Hugging Face ``datasets``, pyarrow,
pandas, duckdb, webdataset, lhotse (``CutSet.from_shar``) and a NeMo tarred-dataset reader
written here to NeMo's documented layout (NeMo itself is too heavy to install for a test);
plus release.json completeness, determinism and the release-license filter.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from granary_pipe.io.formats import FORMATS, resolve_formats
from granary_pipe.io.release import build_release
from granary_pipe.licenses import compatible

try:
    from tests.helpers_rundir import DEFAULT_UNITS, Row, _segs, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import DEFAULT_UNITS, Row, _segs, make_run

KEPT = {r.id: r for rows in DEFAULT_UNITS.values() for r in rows if r.drop_reason is None}
REJECTED = {r.id for rows in DEFAULT_UNITS.values() for r in rows if r.drop_reason is not None}


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def release(run_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rel") / "release"
    return out, build_release(run_dir, out, shard_rows=3, progress=False, formats="all", release_license="CC-BY-4.0")


# ------------------------------------------------------------------ Parquet


def test_hf_load_dataset_parquet_audio_and_text(release, tmp_path):
    import datasets
    rel, _ = release
    files = sorted(str(p) for p in rel.glob("parquet/*/*.parquet"))
    ds = datasets.load_dataset("parquet", data_files={"train": files}, split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert len(ds) == len(KEPT)
    assert isinstance(ds.features["audio"], datasets.Audio)
    assert ds.features["audio"].sampling_rate == 16_000
    raw = ds.cast_column("audio", datasets.Audio(decode=False))
    for row in raw:
        samples, rate = sf.read(io.BytesIO(row["audio"]["bytes"]))
        assert rate == 16_000 and len(samples) == round(KEPT[row["id"]].duration_s * 16_000)
        assert row["text"] == KEPT[row["id"]].text


def test_hf_load_dataset_by_language_config(release, tmp_path):
    """README.md's dataset card declares one config per language over the Parquet shards."""
    import datasets
    rel, _ = release
    ds = datasets.load_dataset(str(rel), "de", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 6 and set(ds["lang"]) == {"de"}
    assert isinstance(ds.features["audio"], datasets.Audio)


def test_pyarrow_pandas_duckdb_query_parquet(release):
    import pyarrow.dataset as pads

    rel, _ = release
    dset = pads.dataset(str(rel / "parquet"), format="parquet")
    assert dset.count_rows() == len(KEPT)
    table = dset.to_table(columns=["id", "lang", "duration_s", "translation"])
    df = table.to_pandas()
    assert df.groupby("lang").size().to_dict() == {"de": 6, "en": 8}
    assert df["translation"].notna().sum() == 4
    import duckdb
    got = duckdb.sql(f"select lang, count(*) from '{rel}/parquet/*/*.parquet' group by lang order by lang").fetchall()
    assert got == [("de", 6), ("en", 8)]


# ------------------------------------------------------------------ WebDataset


def test_webdataset_streams_every_language(release):
    import webdataset as wds
    rel, meta = release
    urls = sorted(str(rel / s["path"]) for s in meta["shards"] if s["format"] == "wds")
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert sorted(keys) == sorted(KEPT)


# ------------------------------------------------------------------ NeMo

_NEMO_MANIFEST_RE = re.compile(r"manifest[^/]*_(\d+)[^/]*\.json")  # NeMo's shard-id patterns
_NEMO_TAR_RE = re.compile(r"audio[^/]*_(\d+)[^/]*\.tar")


def _brace_expand(pattern: str) -> list[str]:
    """NeMo's ``_OP_a..b_CL_`` (zero-padded range) expansion."""
    m = re.search(r"_OP_(\d+)\.\.(\d+)_CL_", pattern)
    if not m:
        return [pattern]
    width = len(m[1])
    return [pattern[: m.start()] + f"{i:0{width}d}" + pattern[m.end():] for i in range(int(m[1]), int(m[2]) + 1)]


def _nemo_read(manifests: list[Path], tars: list[Path]):
    """A tarred-dataset reader per NeMo's layout: shard ids from the file names, manifest
    entries matched to tar members by ``audio_filepath``; yields (entry, flac bytes)."""
    by_id_manifest = {int(_NEMO_MANIFEST_RE.search(str(p))[1]): p for p in manifests}
    by_id_tar = {int(_NEMO_TAR_RE.search(str(p))[1]): p for p in tars}
    assert set(by_id_manifest) == set(by_id_tar), "shard ids of manifests and tars differ"
    for sid in sorted(by_id_manifest):
        entries = [json.loads(line) for line in by_id_manifest[sid].read_text().splitlines()]
        assert all(e["shard_id"] == sid for e in entries)
        with tarfile.open(by_id_tar[sid]) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert sorted(members) == sorted(e["audio_filepath"] for e in entries)  # nothing else in the tar
            assert [m.name for m in tar.getmembers()] == [e["audio_filepath"] for e in entries]  # same order
            for e in entries:
                yield e, tar.extractfile(members[e["audio_filepath"]]).read()


def test_nemo_manifests_and_tars(release):
    rel, meta = release
    seen = []
    for lang, patterns in meta["nemo"].items():
        manifests = [rel / p for p in _brace_expand(patterns["manifest_filepath"])]
        tars = [rel / p for p in _brace_expand(patterns["tarred_audio_filepaths"])]
        assert all(p.is_file() for p in manifests + tars)
        assert sorted(manifests) == sorted((rel / "nemo" / lang).glob("manifest_*.json"))
        for entry, flac in _nemo_read(manifests, tars):
            samples, rate = sf.read(io.BytesIO(flac))
            assert rate == 16_000 and samples.ndim == 1
            assert entry["duration"] == pytest.approx(len(samples) / 16_000, abs=1e-9)
            src = KEPT[entry["id"]]
            assert entry["audio_filepath"] == f"{src.id}.flac"
            assert entry["text"] == src.text and entry["lang"] == lang == src.lang
            if src.translation:  # NeMo's AST (Canary) convention
                assert entry["source_lang"] == "de" and entry["target_lang"] == "en"
                assert entry["answer"] == src.translation and entry["taskname"] == "ast"
            else:
                assert "answer" not in entry and "target_lang" not in entry
            seen.append(entry["id"])
    assert sorted(seen) == sorted(KEPT)
    assert not set(seen) & REJECTED


def test_nemo_order_matches_parquet(release):
    rel, meta = release
    for s in (s for s in meta["shards"] if s["format"] == "parquet"):
        lang, n = s["lang"], s["shard"]
        pq_ids = pq.read_table(rel / s["path"], columns=["id"]).column("id").to_pylist()
        nemo_ids = [json.loads(line)["id"] for line in
                    (rel / f"nemo/{lang}/manifest_{n:06d}.json").read_text().splitlines()]
        assert nemo_ids == pq_ids


# ------------------------------------------------------------------ Lhotse Shar


def test_lhotse_from_shar_loads_recordings_and_supervisions(release):
    import lhotse
    rel, _ = release
    seen = []
    for lang in ("de", "en"):
        for cut in lhotse.CutSet.from_shar(in_dir=str(rel / "lhotse_shar" / lang)):
            src = KEPT[cut.id]
            (sup,) = cut.supervisions
            assert sup.text == src.text and sup.language == lang
            assert sup.custom["license"] == src.license and sup.custom["source"] == "synth-speech"
            assert sup.custom.get("translation") == src.translation
            audio = cut.load_audio()
            assert cut.sampling_rate == 16_000 and audio.shape == (1, round(src.duration_s * 16_000))
            assert cut.duration == pytest.approx(src.duration_s, abs=1e-6)
            seen.append(cut.id)
    assert sorted(seen) == sorted(KEPT)


def test_lhotse_from_shar_with_listed_fields(release):
    """Readers given file lists (e.g. URLs from release.json) get the same cuts."""
    import lhotse
    rel, meta = release
    en = sorted((s for s in meta["shards"] if s["format"] == "lhotse_shar" and s["lang"] == "en"),
                key=lambda s: s["path"])
    fields = {"cuts": [str(rel / s["path"]) for s in en if s["path"].endswith(".jsonl.gz")],
              "recording": [str(rel / s["path"]) for s in en if s["path"].endswith(".tar")]}
    cuts = list(lhotse.CutSet.from_shar(fields=fields))
    assert len(cuts) == 8 and all(c.load_audio().shape[1] > 0 for c in cuts)


def test_shar_layout_matches_lhotse_sharwriter(release, tmp_path):
    """Our Shar files carry what lhotse's own SharWriter writes for the same cut."""
    import lhotse
    from lhotse.shar import SharWriter

    rel, _ = release
    ours = json.loads(gzip.open(rel / "lhotse_shar/de/cuts.000000.jsonl.gz").readline())
    with tarfile.open(rel / "lhotse_shar/de/recording.000000.tar") as tar:
        members = tar.getmembers()
        flac = tar.extractfile(members[0]).read()
        rec_json = json.loads(tar.extractfile(members[1]).read())
    (tmp_path / "a.flac").write_bytes(flac)
    rec = lhotse.Recording.from_file(tmp_path / "a.flac", recording_id=ours["id"])
    sup_d = ours["supervisions"][0]
    sup = lhotse.SupervisionSegment(id=sup_d["id"], recording_id=ours["id"], start=0, duration=rec.duration,
                                    channel=0, text=sup_d["text"], language=sup_d["language"],
                                    custom=sup_d["custom"])
    cut = lhotse.MonoCut(id=ours["id"], start=0, duration=rec.duration, channel=0, supervisions=[sup], recording=rec)
    (tmp_path / "ref").mkdir()
    with SharWriter(str(tmp_path / "ref"), fields={"recording": "flac"}, shard_size=10) as w:
        w.write(cut)
    ref = json.loads(gzip.open(tmp_path / "ref/cuts.000000.jsonl.gz").readline())
    assert ours == ref
    with tarfile.open(tmp_path / "ref/recording.000000.tar") as tar:
        ref_members = tar.getmembers()
        ref_rec = json.loads(tar.extractfile(ref_members[1]).read())
    assert [m.name for m in members[:2]] == [m.name for m in ref_members]
    assert rec_json == ref_rec


# ------------------------------------------------------------------ release.json


def test_release_json_lists_every_file_of_every_format(release):
    rel, meta = release
    assert meta["formats"] == list(FORMATS)
    on_disk = {str(p.relative_to(rel)) for p in rel.rglob("*") if p.is_file() and p.parent != rel}
    assert {s["path"] for s in meta["shards"]} == on_disk
    for s in meta["shards"] + meta["files"]:
        data = (rel / s["path"]).read_bytes()
        assert s["sha256"] == hashlib.sha256(data).hexdigest() and s["bytes"] == len(data)
    assert {f["path"] for f in meta["files"]} == {"ATTRIBUTION.md", "README.md"}
    per_fmt = {}
    for s in meta["shards"]:
        per_fmt[s["format"]] = per_fmt.get(s["format"], 0) + s["bytes"]
    assert meta["totals"]["bytes"] == per_fmt
    assert sum(v["bytes"]["nemo"] for v in meta["totals"]["per_lang"].values()) == per_fmt["nemo"]
    # every format holds the same rows per shard
    rows = {}
    for s in meta["shards"]:
        rows.setdefault((s["lang"], s["shard"]), set()).add(s["rows"])
    assert all(len(v) == 1 for v in rows.values())
    assert meta["nemo"]["en"] == {"manifest_filepath": "nemo/en/manifest__OP_000000..000002_CL_.json",
                                  "tarred_audio_filepaths": "nemo/en/audio__OP_000000..000002_CL_.tar"}


def test_release_json_provenance_sources_and_exclusions(release):
    _, meta = release
    assert meta["release_license"] == "CC-BY-4.0"
    assert meta["excluded"] == {"by_license": {}, "by_lang": {}}
    (src,) = meta["sources"]
    assert src["license"] == "CC-BY-4.0"
    assert src["release"]["rows"] == 14 and src["release"]["licenses"] == {"CC-BY-4.0": 12, "CC0-1.0": 2}
    assert meta["config"]["name"] == "demo"
    assert meta["run"]["name"] == "run" and meta["run"]["units_failed"] == ["u000003"]
    assert meta["sharding"]["naming"]["lhotse_shar"].startswith("lhotse_shar/{lang}/cuts.%06d")


def test_release_json_models_without_local_paths(tmp_path):
    run = make_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["models"] = {"whisper-base": {"model_id": "Systran/faster-whisper-base", "license": "MIT",
                                       "path": "/home/someone/.cache/whisper", "sha256": "ab" * 32}}
    (run / "run.json").write_text(json.dumps(info))
    meta = build_release(run, tmp_path / "rel", progress=False)
    assert meta["models"] == {"whisper-base": {"model_id": "Systran/faster-whisper-base", "license": "MIT",
                                               "sha256": "ab" * 32}}
    assert "/home/someone" not in (tmp_path / "rel" / "release.json").read_text()


def test_all_formats_rebuild_byte_identical(run_dir, release, tmp_path):
    rel, _ = release
    build_release(run_dir, tmp_path / "again", shard_rows=3, progress=False, formats="all", release_license="CC-BY-4.0")
    assert _tree_hashes(tmp_path / "again") == _tree_hashes(rel)


def test_format_selection(run_dir, tmp_path):
    meta = build_release(run_dir, tmp_path / "rel", progress=False, formats=["lhotse_shar", "nemo"])
    assert meta["formats"] == ["nemo", "lhotse_shar"]
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == [
        "ATTRIBUTION.md", "README.md", "lhotse_shar", "nemo", "release.json"]
    assert build_release(run_dir, tmp_path / "d", progress=False)["formats"] == ["parquet", "wds"]
    assert resolve_formats("wds,parquet") == ("parquet", "wds")
    with pytest.raises(ValueError, match="tfrecord"):
        build_release(run_dir, tmp_path / "x", progress=False, formats=["parquet", "tfrecord"])


def test_byte_target_cuts_every_format_alike(run_dir, tmp_path):
    meta = build_release(run_dir, tmp_path / "rel", shard_bytes=30_000, progress=False, formats="all")
    by_fmt = {}
    for s in meta["shards"]:
        by_fmt.setdefault(s["format"], {})[(s["lang"], s["shard"])] = s["rows"]
    assert by_fmt["parquet"] == by_fmt["wds"] == by_fmt["nemo"] == by_fmt["lhotse_shar"]
    assert max(by_fmt["parquet"].values()) < 8 and sum(by_fmt["parquet"].values()) == 14


# ------------------------------------------------------------------ license filter


@pytest.mark.parametrize("row, release_license, ok", [
    ("CC0-1.0", "CC-BY-4.0", True),
    ("public-domain", "CC-BY-4.0", True),
    ("PDDL-1.0", "CC-BY-SA-4.0", True),
    ("CC-BY-4.0", "CC-BY-4.0", True),
    ("CC-BY-3.0", "CC-BY-4.0", True),
    ("CC-BY-4.0", "CC-BY-SA-4.0", True),
    ("CC-BY-SA-4.0", "CC-BY-4.0", False),
    ("CC-BY-SA-4.0", "CC-BY-SA-4.0", True),
    ("CC-BY-SA-3.0", "CC-BY-SA-4.0", True),
    ("CC-BY-SA-4.0", "CC-BY-SA-3.0", False),
    ("CC-BY-4.0", "CC0-1.0", False),
    ("CC0-1.0", "CC0-1.0", True),
    ("CC-BY-NC-4.0", "CC-BY-4.0", False),
    ("CC-BY-ND-4.0", "CC-BY-4.0", False),
    ("unknown", "CC-BY-4.0", False),
])
def test_compatible(row, release_license, ok):
    """The rules the release filter relies on (granary_pipe.licenses.compatible)."""
    assert compatible(row, release_license) is ok


def _sa_run(tmp_path: Path) -> Path:
    units = {"u000000": [*_segs("rec00", "en", 3), *_segs("rec01", "en", 2, license="CC0-1.0"),
                         *_segs("rec02", "en", 2, license="CC-BY-SA-4.0"),
                         Row("rec03-s000", "rec03", "en", 0.5, license="CC-BY-NC-4.0",
                             drop_reason="license:CC-BY-NC-4.0")]}
    return make_run(tmp_path, units, uncommitted={}, failed={})


def test_release_license_keeps_only_compatible_rows(tmp_path):
    run = _sa_run(tmp_path)
    meta = build_release(run, tmp_path / "by", progress=False, release_license="CC BY 4.0")
    assert meta["release_license"] == "CC-BY-4.0"
    assert meta["licenses"] == {"CC-BY-4.0": 3, "CC0-1.0": 2}
    assert meta["excluded"]["by_license"] == {"CC-BY-SA-4.0": 2}
    ids = pq.read_table(next((tmp_path / "by").glob("parquet/en/*.parquet"))).column("id").to_pylist()
    assert not any(i.startswith(("rec02", "rec03")) for i in ids)
    sa = build_release(run, tmp_path / "sa", progress=False, release_license="CC-BY-SA-4.0")
    assert sa["licenses"] == {"CC-BY-4.0": 3, "CC-BY-SA-4.0": 2, "CC0-1.0": 2}
    assert "rec03-s000" not in json.dumps(sa)  # rejected rows never enter, whatever the license
    cc0 = build_release(run, tmp_path / "cc0", progress=False, release_license="CC0-1.0")
    assert cc0["licenses"] == {"CC0-1.0": 2}
    assert "Release license: CC0-1.0." in (tmp_path / "cc0" / "ATTRIBUTION.md").read_text()
    assert "license: cc0-1.0" in (tmp_path / "cc0" / "README.md").read_text()


def test_release_license_errors(tmp_path):
    run = _sa_run(tmp_path)
    with pytest.raises(ValueError, match="not in the license registry"):
        build_release(run, tmp_path / "x", progress=False, release_license="WTFPL-9")
    with pytest.raises(ValueError, match="not open-source compliant"):
        build_release(run, tmp_path / "x", progress=False, release_license="CC-BY-NC-4.0")
    units = {"u000000": _segs("rec00", "en", 2, license="CC-BY-SA-4.0")}
    only_sa = make_run(tmp_path / "sa", units, uncommitted={}, failed={})
    with pytest.raises(ValueError, match="compatible with CC-BY-4.0"):
        build_release(only_sa, tmp_path / "y", progress=False, release_license="CC-BY-4.0")
