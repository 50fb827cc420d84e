"""Release building: shards, checksums, determinism, filters and errors (no models)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from granary_pipe.io.release import build_release

try:
    from tests.helpers_rundir import DEFAULT_UNCOMMITTED, DEFAULT_UNITS, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import DEFAULT_UNCOMMITTED, DEFAULT_UNITS, make_run

KEPT = {r.id: r for rows in DEFAULT_UNITS.values() for r in rows if r.drop_reason is None}
REJECTED = {r.id for rows in DEFAULT_UNITS.values() for r in rows if r.drop_reason is not None}
UNCOMMITTED = {r.id for rows in DEFAULT_UNCOMMITTED.values() for r in rows}


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _parquet_rows(rel: Path, lang: str | None = None) -> list[dict]:
    rows = []
    for path in sorted(rel.glob(f"parquet/{lang or '*'}/*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def release(run_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rel") / "release"
    return out, build_release(run_dir, out, shard_rows=3, progress=False)


def test_release_has_only_kept_rows_of_committed_units(release):
    rel, _ = release
    ids = [r["id"] for r in _parquet_rows(rel)]
    assert sorted(ids) == sorted(KEPT)
    assert not set(ids) & REJECTED
    assert not set(ids) & UNCOMMITTED
    assert {r["lang"] for r in _parquet_rows(rel, "en")} == {"en"}
    assert {r["lang"] for r in _parquet_rows(rel, "de")} == {"de"}


def test_parquet_audio_decodes_at_16k(release):
    rel, meta = release
    for shard in (s for s in meta["shards"] if s["format"] == "parquet"):
        table = pq.read_table(rel / shard["path"])
        assert table.num_rows == shard["rows"]
        assert "audio" in table.column_names and "drop_reason" not in table.column_names
        for row in table.to_pylist():
            assert row["audio"]["path"] == f"{row['id']}.flac"
            samples, rate = sf.read(io.BytesIO(row["audio"]["bytes"]))
            assert rate == 16_000 and samples.ndim == 1
            assert len(samples) == round(KEPT[row["id"]].duration_s * 16_000)
            assert row["text"] == KEPT[row["id"]].text


def test_parquet_carries_hf_audio_feature(release):
    rel, _ = release
    path = next(rel.glob("parquet/en/*.parquet"))
    schema = pq.read_schema(path)
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["audio"] == {"sampling_rate": 16000, "_type": "Audio"}
    assert features["text"] == {"dtype": "string", "_type": "Value"}
    import datasets
    hf = datasets.Features.from_arrow_schema(schema)
    assert isinstance(hf["audio"], datasets.Audio) and hf["audio"].sampling_rate == 16000


def test_datasets_loads_parquet_shards(release, tmp_path):
    import datasets
    rel, _ = release
    files = sorted(str(p) for p in rel.glob("parquet/*/*.parquet"))
    ds = datasets.Dataset.from_parquet(files, cache_dir=str(tmp_path / "cache"))
    assert len(ds) == len(KEPT)
    assert isinstance(ds.features["audio"], datasets.Audio)
    raw = ds.cast_column("audio", datasets.Audio(decode=False))[0]["audio"]
    _, rate = sf.read(io.BytesIO(raw["bytes"]))
    assert rate == 16_000


def test_duckdb_reads_parquet_shards(release):
    import duckdb
    rel, _ = release
    got = duckdb.sql(
        f"SELECT lang, count(*) FROM read_parquet('{rel}/parquet/*/*.parquet') GROUP BY lang ORDER BY lang"
    ).fetchall()
    assert got == [("de", 6), ("en", 8)]


def test_webdataset_streams_flac_and_json(release):
    import webdataset as wds
    rel, meta = release
    seen = []
    for shard in (s for s in meta["shards"] if s["format"] == "wds"):
        samples = list(wds.WebDataset(str(rel / shard["path"]), shardshuffle=False))
        assert len(samples) == shard["rows"]
        pq_ids = pq.read_table(rel / shard["path"].replace("wds", "parquet", 1).replace(".tar", ".parquet")).column("id").to_pylist()
        assert [s["__key__"] for s in samples] == pq_ids  # same order in both formats
        for s in samples:
            row = json.loads(s["json"])
            assert row["id"] == s["__key__"] and row["lang"] == shard["lang"]
            assert "audio" not in row and "drop_reason" not in row
            samples_, rate = sf.read(io.BytesIO(s["flac"]))
            assert rate == 16_000 and len(samples_) == round(row["duration_s"] * 16_000)
            seen.append(row["id"])
    assert sorted(seen) == sorted(KEPT)


def test_release_json_checksums_and_inventory(release):
    rel, meta = release
    assert json.loads((rel / "release.json").read_text()) == meta
    listed = {s["path"] for s in meta["shards"]}
    on_disk = {str(p.relative_to(rel)) for p in rel.rglob("*") if p.is_file() and p.parent != rel}
    assert listed == on_disk
    for s in meta["shards"]:
        data = (rel / s["path"]).read_bytes()
        assert s["sha256"] == hashlib.sha256(data).hexdigest()
        assert s["bytes"] == len(data)
    assert meta["totals"]["rows"] == len(KEPT)
    assert meta["totals"]["per_lang"]["en"]["rows"] == 8
    assert meta["totals"]["per_lang"]["de"]["rows"] == 6
    hours = sum(r.duration_s for r in KEPT.values()) / 3600
    assert meta["totals"]["hours"] == pytest.approx(hours, abs=1e-5)
    assert meta["licenses"] == {"CC-BY-4.0": 12, "CC0-1.0": 2}
    assert meta["sources"][0]["name"] == "synth-speech"
    assert meta["config"]["name"] == "demo"
    assert meta["release_license"] is None  # none asked for: no license filter beyond the run's gate
    assert not list(rel.glob(".tmp-*"))


def test_shard_row_target(release):
    _, meta = release
    rows = {(s["lang"], s["format"]): [] for s in meta["shards"]}
    for s in meta["shards"]:
        rows[(s["lang"], s["format"])].append(s["rows"])
    assert rows[("en", "parquet")] == [3, 3, 2] and rows[("en", "wds")] == [3, 3, 2]
    assert rows[("de", "parquet")] == [3, 3]
    assert meta["totals"]["per_lang"]["en"]["shards"] == 3


def test_shard_byte_target(run_dir, tmp_path):
    meta = build_release(run_dir, tmp_path / "rel", shard_bytes=1, progress=False)
    assert all(s["rows"] == 1 for s in meta["shards"])
    assert len(meta["shards"]) == 2 * len(KEPT)


def test_attribution(release):
    rel, _ = release
    text = (rel / "ATTRIBUTION.md").read_text()
    for needle in ("synth-speech", "https://example.org/synth-speech", "@misc{synth",
                   "| CC-BY-4.0 | 12 |", "| CC0-1.0 | 2 |"):
        assert needle in text


def test_language_filter(run_dir, tmp_path):
    meta = build_release(run_dir, tmp_path / "rel", langs=["de"], progress=False)
    assert {s["lang"] for s in meta["shards"]} == {"de"}
    assert list(meta["totals"]["per_lang"]) == ["de"] and meta["totals"]["rows"] == 6
    assert not (tmp_path / "rel" / "parquet" / "en").exists()
    with pytest.raises(ValueError, match="fr"):
        build_release(run_dir, tmp_path / "rel2", langs=["fr"], progress=False)


def test_rebuild_is_byte_identical(run_dir, release, tmp_path):
    rel, _ = release
    build_release(run_dir, tmp_path / "again", shard_rows=3, progress=False)
    assert _tree_hashes(tmp_path / "again") == _tree_hashes(rel)


def test_order_independent_of_units_but_not_of_seed(release, tmp_path):
    rel, _ = release
    swapped = {"u000000": DEFAULT_UNITS["u000001"], "u000007": DEFAULT_UNITS["u000000"]}
    other = make_run(tmp_path / "other", swapped)
    build_release(other, tmp_path / "rel", shard_rows=3, progress=False)
    assert _tree_hashes(tmp_path / "rel") == _tree_hashes(rel)
    build_release(other, tmp_path / "seeded", shard_rows=3, seed=1, progress=False)
    ids0 = [r["id"] for r in _parquet_rows(rel, "en")]
    ids1 = [r["id"] for r in _parquet_rows(tmp_path / "seeded", "en")]
    assert sorted(ids0) == sorted(ids1) and ids0 != ids1


def test_out_dir_must_be_empty_unless_overwrite(run_dir, tmp_path):
    out = tmp_path / "rel"
    build_release(run_dir, out, shard_rows=100, progress=False)
    with pytest.raises(FileExistsError, match=str(out)):
        build_release(run_dir, out, progress=False)
    (out / "NOTES.txt").write_text("mine")  # not a release's: --overwrite refuses rather than guess
    with pytest.raises(FileExistsError, match="NOTES.txt"):
        build_release(run_dir, out, progress=False, overwrite=True)
    assert (out / "NOTES.txt").read_text() == "mine"
    (out / "NOTES.txt").unlink()
    meta = build_release(run_dir, out, shard_rows=3, langs=["en"], progress=False, overwrite=True)
    assert not (out / "parquet" / "de").exists()
    assert {str(p.relative_to(out)) for p in out.rglob("*.parquet")} == {
        s["path"] for s in meta["shards"] if s["format"] == "parquet"
    }


def test_missing_run_json_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope" / "run.json")):
        build_release(tmp_path / "nope", tmp_path / "rel", progress=False)


def test_no_committed_unit_is_an_error(tmp_path):
    run = make_run(tmp_path, units={})
    with pytest.raises(ValueError, match="no committed unit"):
        build_release(run, tmp_path / "rel", progress=False)
    assert not (tmp_path / "rel").exists()


def test_missing_audio_names_the_file(tmp_path):
    run = make_run(tmp_path)
    victim = next((run / "units" / "u000001" / "audio").glob("rec10-*.flac"))  # an English row
    saved = victim.read_bytes()
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        build_release(run, tmp_path / "rel", progress=False)
    # nothing half-written in the release: only the work directory, holding the shard that was done (de)
    assert [p.name.startswith(".tmp-release-") for p in (tmp_path / "rel").iterdir()] == [True]
    victim.write_bytes(saved)
    meta = build_release(run, tmp_path / "rel", progress=False)  # resumes: writes the English shard
    assert meta["totals"]["rows"] == len(KEPT)
    build_release(run, tmp_path / "fresh", progress=False)
    assert _tree_hashes(tmp_path / "rel") == _tree_hashes(tmp_path / "fresh")
