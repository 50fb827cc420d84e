"""Nothing from outside the corpus, nothing private in a release.

Ingest confines every listed path to the corpus root (refused with a ConfigError naming the
listing line, unless ``allow_outside_root: true``), counts one file once however it is spelled,
a release carries corpus-relative paths only, and the resume fingerprint covers every per-line
value of the listing.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from granary_pipe.config import ConfigError, load_pipeline
from granary_pipe.io.release import build_release
from granary_pipe.listing import file_fingerprint
from granary_pipe.pipeline import resolved_config, run_pipeline
from granary_pipe.report.summary import summarize
from granary_pipe.report.text import format_summary
from granary_pipe.ingest.manifest import list_recordings, recording_id
from granary_pipe.ingest.readers import read_entries
from granary_pipe.ingest.source import load_manifest

try:
    from tests.helpers_rundir import make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import make_run

FAKE = b"RIFF fake"  # ingest never reads the audio


def put(path: Path, data: bytes | str = FAKE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def source(root: Path, **fields) -> Path:
    path = root / "corp.yaml"
    path.write_text(yaml.safe_dump({"name": "corp", "license": "CC-BY-4.0", **fields}), encoding="utf-8")
    return path


def jsonl(root: Path, lines: list[dict], name: str = "listing.jsonl", **fields) -> tuple[Path, Path]:
    """Manifest + JSONL listing under ``root``; returns (manifest, listing)."""
    listing = put(root / name, "".join(json.dumps(x) + "\n" for x in lines))
    return source(root, listing=name, **fields), listing


def error(manifest: Path) -> str:
    with pytest.raises(ConfigError) as info:
        list_recordings(manifest)
    return str(info.value)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """An audio file beside (not inside) the corpus directory ``tmp_path/corpus``."""
    return put(tmp_path / "elsewhere" / "secret.wav")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    put(tmp_path / "corpus" / "audio" / "a.wav")
    return tmp_path / "corpus"


# ----------------------------------------------------------------------------- confinement

def test_jsonl_dot_dot_escape_is_refused_naming_line_and_fix(corpus):
    manifest, listing = jsonl(corpus, [{"path": "audio/a.wav"}, {"path": "../../../../etc/passwd"}])
    msg = error(manifest)
    assert f"{listing}:2:" in msg and "'../../../../etc/passwd'" in msg
    assert "outside the corpus root" in msg and "allow_outside_root: true" in msg and str(manifest) in msg


def test_jsonl_absolute_path_outside_is_refused(corpus, outside):
    manifest, listing = jsonl(corpus, [{"path": str(outside)}])
    msg = error(manifest)
    assert f"{listing}:1:" in msg and str(outside) in msg and "outside the corpus root" in msg


def test_symlink_inside_the_corpus_pointing_outside_is_refused(corpus, outside):
    (corpus / "audio" / "link.wav").symlink_to(outside)
    manifest, listing = jsonl(corpus, [{"path": "audio/a.wav"}, {"path": "audio/link.wav"}])
    msg = error(manifest)
    assert f"{listing}:2:" in msg and str(outside) in msg
    # a symlinked directory leads out just the same
    (corpus / "dirlink").symlink_to(outside.parent, target_is_directory=True)
    manifest, listing = jsonl(corpus, [{"path": "dirlink/secret.wav"}])
    assert f"{listing}:1:" in error(manifest)


def test_absolute_path_inside_the_root_is_the_relative_one(corpus):
    manifest, _ = jsonl(corpus, [{"path": str(corpus / "audio" / "a.wav")}])
    _, table = list_recordings(manifest)
    assert table.column("audio_relpath").to_pylist() == ["audio/a.wav"]
    assert table.column("recording_id").to_pylist() == [recording_id("corp", "audio/a.wav")]


@pytest.mark.parametrize("pattern", ["../**/*.wav", "../elsewhere/*.wav", "{outside}"])
def test_audio_glob_escaping_the_manifest_directory_is_refused(corpus, outside, pattern):
    pattern = pattern.format(outside=outside.parent / "*.wav")
    manifest = source(corpus, audio=pattern)
    msg = error(manifest)
    assert str(manifest) in msg and f"audio glob {pattern!r}" in msg and "outside the corpus root" in msg


def test_audio_glob_through_an_outward_symlink_is_refused(corpus, outside):
    (corpus / "audio" / "link.wav").symlink_to(outside)
    manifest = source(corpus, audio="audio/*.wav")
    msg = error(manifest)
    assert f"{manifest}: audio glob 'audio/*.wav'" in msg and str(outside) in msg and "allow_outside_root" in msg


def test_tsv_audio_leading_outside_is_refused(corpus, outside):
    (corpus / "clips").symlink_to(outside.parent, target_is_directory=True)
    put(corpus / "train.tsv", "path\tsentence\nsecret.wav\thello\n")
    msg = error(source(corpus, listing="train.tsv", reader="tsv"))
    assert f"{corpus / 'train.tsv'}:2:" in msg and str(outside) in msg
    # audio_dir pointing out of the corpus by itself
    (corpus / "clips").unlink()
    msg = error(source(corpus, listing="train.tsv", reader="tsv", reader_options={"audio_dir": "../elsewhere"}))
    assert f"{corpus / 'train.tsv'}:2:" in msg and "outside the corpus root" in msg


def test_url_root_is_the_root_for_a_listing_under_url(tmp_path):
    put(tmp_path / "data" / "shared.wav")  # under the manifest's directory, but not under the url root
    put(tmp_path / "data" / "corp" / "x.wav")
    put(tmp_path / "data" / "corp" / "listing.jsonl", '{"path": "x.wav"}\n{"path": "../shared.wav"}\n')
    msg = error(source(tmp_path, url="data/corp", reader="jsonl"))
    assert f"{tmp_path / 'data' / 'corp' / 'listing.jsonl'}:2:" in msg
    assert f"root {(tmp_path / 'data' / 'corp').resolve()}" in msg


@pytest.mark.parametrize("reader, inside", [("folder", "a/link.flac"), ("librilight", "small/1/2/link.flac")])
def test_url_tree_symlink_leading_out_is_refused(tmp_path, reader, inside):
    tree = tmp_path / "tree"
    put(tree / "a" / "ok.flac")
    target = put(tmp_path / "elsewhere" / "x.flac")
    (tree / inside).parent.mkdir(parents=True, exist_ok=True)
    (tree / inside).symlink_to(target)
    msg = error(source(tmp_path, url="tree", reader=reader))
    assert str(tmp_path / "corp.yaml") in msg and repr(inside) in msg and str(target) in msg


def test_parquet_path_beside_the_shard_leading_out_is_refused(tmp_path, outside):
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "x.wav").symlink_to(outside)
    pq.write_table(pa.table({"audio": ["x.wav"], "text": ["hi"]}), tmp_path / "pq" / "train.parquet")
    msg = error(source(tmp_path, url="pq", reader="parquet"))
    assert "train.parquet: row 0" in msg and str(outside) in msg


def test_allow_outside_root_lets_them_through(tmp_path, corpus, outside):
    (corpus / "audio" / "link.wav").symlink_to(outside)
    put(tmp_path / "elsewhere" / "other.wav")
    put(tmp_path / "elsewhere" / "third.wav")
    manifest, _ = jsonl(corpus, [{"path": "audio/a.wav"}, {"path": "audio/link.wav"},
                                 {"path": "../elsewhere/other.wav"}, {"path": str(tmp_path / "elsewhere" / "third.wav")}],
                        allow_outside_root=True)
    assert load_manifest(manifest).allow_outside_root is True
    _, table = list_recordings(manifest)
    rows = {r["audio_relpath"]: r["audio_path"] for r in table.to_pylist()}
    # an absolute path outside the root: a release shows only its name, and its id does not depend
    # on where the manifest sits (a Ray job runs it from an uploaded copy of the working dir)
    assert rows == {"audio/a.wav": str((corpus / "audio" / "a.wav").resolve()),
                    "audio/link.wav": str(outside.resolve()),
                    "../elsewhere/other.wav": str((tmp_path / "elsewhere" / "other.wav").resolve()),
                    "third.wav": str((tmp_path / "elsewhere" / "third.wav").resolve())}
    third = next(r["id"] for r in table.to_pylist() if r["audio_relpath"] == "third.wav")
    moved = tmp_path / "moved"
    shutil.copytree(corpus, moved)
    _, again = list_recordings(moved / manifest.name)
    assert third in again.column("id").to_pylist()
    # the glob and the tree readers too
    glob = source(corpus, audio="../elsewhere/*.wav", allow_outside_root=True)
    assert sorted(list_recordings(glob)[1].column("audio_relpath").to_pylist()) == [
        "../elsewhere/other.wav", "../elsewhere/secret.wav", "../elsewhere/third.wav"]
    tree = source(tmp_path, url="corpus", reader="folder", allow_outside_root=True)
    assert sorted(e.key for e in read_entries(load_manifest(tree), tree)) == ["audio/a.wav", "audio/link.wav"]


def test_allow_outside_root_must_be_a_boolean(corpus):
    manifest, _ = jsonl(corpus, [{"path": "audio/a.wav"}], allow_outside_root="sometimes")
    assert "allow_outside_root" in error(manifest)


# ----------------------------------------------------------------------------- one file, one row

def test_same_file_relative_and_absolute_is_a_duplicate(corpus):
    manifest, listing = jsonl(corpus, [{"path": "audio/a.wav"}, {"path": str(corpus / "audio" / "a.wav")}])
    msg = error(manifest)
    assert f"{listing}:2:" in msg and "already listed on line 1" in msg


def test_same_file_through_a_symlink_is_a_duplicate(corpus):
    (corpus / "audio" / "alias.wav").symlink_to(corpus / "audio" / "a.wav")
    manifest, listing = jsonl(corpus, [{"path": "audio/a.wav"}, {"path": "audio/b.wav"}, {"path": "audio/alias.wav"}])
    put(corpus / "audio" / "b.wav")
    msg = error(manifest)
    assert f"{listing}:3:" in msg and "'audio/alias.wav' is the same file as 'audio/a.wav'" in msg
    assert "already listed on line 1" in msg and "list each recording once" in msg


def test_same_file_through_a_symlinked_directory_is_a_duplicate(corpus):
    (corpus / "mirror").symlink_to(corpus / "audio", target_is_directory=True)
    manifest, listing = jsonl(corpus, [{"path": "mirror/a.wav"}, {"path": "audio/a.wav"}])
    assert f"{listing}:2:" in error(manifest)


def test_dot_dot_spelling_is_a_duplicate(corpus):
    put(corpus / "b.wav")
    manifest, listing = jsonl(corpus, [{"path": "b.wav"}, {"path": "audio/../b.wav"}])
    msg = error(manifest)
    assert f"{listing}:2:" in msg and "'b.wav' already listed on line 1" in msg


def test_tree_reader_symlinked_file_is_a_duplicate(tmp_path):
    put(tmp_path / "tree" / "a.flac")
    (tmp_path / "tree" / "b.flac").symlink_to(tmp_path / "tree" / "a.flac")
    msg = error(source(tmp_path, url="tree", reader="folder"))
    assert str(tmp_path / "corp.yaml") in msg and "'b.flac' is the same file as 'a.flac'" in msg


def test_missing_files_still_ingest_but_not_twice(corpus):
    manifest, _ = jsonl(corpus, [{"path": "audio/a.wav"}, {"path": "gone/x.wav"}, {"path": "gone/y.wav"}])
    _, table = list_recordings(manifest)
    assert sorted(table.column("audio_relpath").to_pylist()) == ["audio/a.wav", "gone/x.wav", "gone/y.wav"]
    manifest, listing = jsonl(corpus, [{"path": "gone/x.wav"}, {"path": str(corpus / "gone" / "x.wav")}])
    assert f"{listing}:2:" in error(manifest)


# ----------------------------------------------------------------------------- releases

def _privatise(run: Path, corpus: Path) -> None:
    """Make a synthetic run look like a real one: rows carry the curator's absolute audio path
    and the corpus-relative one; run.json names local manifest, url and cache paths."""
    for path in sorted(run.glob("units/*/*.parquet")):
        table = pq.read_table(path)
        rel = [f"audio/{r}.wav" for r in table.column("recording_id").to_pylist()]
        table = table.set_column(table.schema.get_field_index("audio_path"), "audio_path",
                                 pa.array([str(corpus / r) for r in rel], pa.string()))
        table = table.set_column(table.schema.get_field_index("audio_relpath"), "audio_relpath",
                                 pa.array(rel, pa.string()))
        pq.write_table(table, path)
    info = json.loads((run / "run.json").read_text())
    info["source"].update(manifest=str(corpus / "synth.yaml"), url=str(corpus), reader="folder",
                          reader_options={"cache_dir": str(run.parent / "cache"), "lang": "en"})
    info["pipeline_file"] = str(run / "pipeline.yaml")
    (run / "run.json").write_text(json.dumps(info))


def _texts(rel: Path) -> dict[str, str]:
    """Every file of a release as text: Parquet tables (less audio bytes) as JSON, gzip inflated,
    tar members' names and bytes, anything else raw."""
    out = {}
    for path in sorted(p for p in rel.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            out[str(path)] = json.dumps(pq.read_table(path).drop_columns(["audio"]).to_pylist(), default=str)
            out[str(path)] += json.dumps(pq.read_table(path).column("audio").combine_chunks().field("path").to_pylist())
            out[str(path)] += str(pq.read_metadata(path).metadata)
        elif path.suffix == ".gz":
            out[str(path)] = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
        else:
            out[str(path)] = path.read_bytes().decode("utf-8", "replace")
            if path.suffix == ".tar":
                with tarfile.open(path) as tf:
                    out[str(path)] += "\n".join(tf.getnames())
    return out


def test_release_carries_no_absolute_path_of_the_run_or_the_corpus(tmp_path):
    run = make_run(tmp_path)
    corpus = tmp_path / "private-corpus"
    _privatise(run, corpus)
    rel = tmp_path / "rel"
    build_release(run, rel, progress=False, formats="all")
    texts = _texts(rel)
    assert len(texts) > 8
    for secret in (str(run.resolve()), str(corpus), str(tmp_path / "cache")):
        leaks = [name for name, text in texts.items() if secret in text]
        assert not leaks, f"{secret} appears in {leaks}"
    summary = summarize(rel)
    assert str(corpus) not in json.dumps(summary) + format_summary(summary, color=False)
    assert str(run.resolve()) not in json.dumps(summary) + format_summary(summary, color=False)
    # the path a release does carry is the corpus-relative one, in every format that has it
    rows = [r for p in sorted(rel.glob("parquet/*/*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert rows and all(r["audio_path"] == f"audio/{r['recording_id']}.wav" for r in rows)
    assert "audio_relpath" not in rows[0]
    with tarfile.open(next(rel.glob("wds/*/*.tar"))) as tf:
        meta = [json.load(tf.extractfile(m)) for m in tf.getmembers() if m.name.endswith(".json")]
    assert meta and all(m["audio_path"] == f"audio/{m['recording_id']}.wav" for m in meta)
    cut = json.loads(gzip.decompress(next(rel.glob("lhotse_shar/*/cuts.*.jsonl.gz")).read_bytes()).splitlines()[0])
    assert cut["supervisions"][0]["custom"]["audio_path"].startswith("audio/")
    release = json.loads((rel / "release.json").read_text())
    (src,) = release["sources"]
    assert src["manifest"] == "synth.yaml" and src["url"] == corpus.name
    assert src["reader_options"] == {"lang": "en"}


def test_release_of_a_run_without_relative_paths_shows_none(tmp_path):
    run = make_run(tmp_path)
    for path in sorted(run.glob("units/*/kept.parquet")):  # a run made before audio_relpath existed
        table = pq.read_table(path).drop_columns(["audio_relpath"])
        pq.write_table(table.set_column(table.schema.get_field_index("audio_path"), "audio_path",
                                        pa.array(["/home/curator/x.wav"] * table.num_rows)), path)
    rel = tmp_path / "rel"
    build_release(run, rel, progress=False, formats="parquet,wds")
    assert not [name for name, text in _texts(rel).items() if "/home/curator" in text]


def test_ingest_sets_the_relative_path_from_the_reader_key(tmp_path):
    put(tmp_path / "tree" / "s1" / "a.flac")
    manifest = source(tmp_path, url="tree", reader="folder")
    _, table = list_recordings(manifest)
    (row,) = table.to_pylist()
    assert row["audio_relpath"] == "s1/a.flac" and row["audio_path"] == str((tmp_path / "tree" / "s1" / "a.flac"))


# ----------------------------------------------------------------------------- resume fingerprint

RESOLVED = {"stages": [{"use": "audio.decode", "max_duration_s": 60}], "units": {"recordings_per_unit": 4}}


def _fingerprint(resolved: dict, table: pa.Table) -> str:
    """The resume fingerprint of ``table`` written as a listing file (as ``plan_listing`` does)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "listing.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return file_fingerprint(resolved, path)


def _listing_fingerprint(manifest: Path) -> str:
    return _fingerprint(RESOLVED, list_recordings(manifest)[1])


BASE_LINES = [{"path": "audio/a.wav", "lang": "en", "text": "hello there", "license": "CC-BY-4.0"},
              {"path": "audio/b.wav"}]


@pytest.mark.parametrize("edit", [
    {"lang": "de"},
    {"text": "hello here"},
    {"license": "CC0-1.0"},
    {"license": "CC BY 4.0"},  # the same license id, another raw string: the row records the raw one
    {"lang": None},
])
def test_fingerprint_covers_each_listing_value(corpus, edit):
    put(corpus / "audio" / "b.wav")
    manifest, _ = jsonl(corpus, BASE_LINES)
    before = _listing_fingerprint(manifest)
    assert _listing_fingerprint(manifest) == before, "an unchanged listing must keep its fingerprint"
    jsonl(corpus, [{k: v for k, v in {**BASE_LINES[0], **edit}.items() if v is not None}, BASE_LINES[1]])
    assert _listing_fingerprint(manifest) != before


def test_fingerprint_ignores_the_package_version(corpus):
    manifest, _ = jsonl(corpus, BASE_LINES[:1])
    table = list_recordings(manifest)[1]
    other = table.set_column(table.schema.get_field_index("pipeline_version"), "pipeline_version",
                             pa.array(["0.0.0-other"], pa.string()))
    assert _fingerprint(RESOLVED, other) == _fingerprint(RESOLVED, table)


def test_rerun_after_editing_a_listing_line_is_refused(tmp_path, corpus):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "t", "units": {"recordings_per_unit": 2}, "stages": [
        {"use": "audio.decode"}, {"use": "license.gate"}]}))
    put(corpus / "audio" / "b.wav")
    manifest, _ = jsonl(corpus, BASE_LINES)
    config, stages = load_pipeline(pipeline)
    out = tmp_path / "run"
    out.mkdir()  # the first run's run.json, as run_pipeline writes it, without running anything
    fp = _fingerprint(resolved_config(config, stages), list_recordings(manifest)[1])
    (out / "run.json").write_text(json.dumps({"fingerprint": fp, "units": {}}))
    jsonl(corpus, [{**BASE_LINES[0], "text": "another reference"}, BASE_LINES[1]])
    with pytest.raises(ConfigError, match="holds a run of another pipeline config or source"):
        run_pipeline(pipeline, manifest, out, progress=False)
    # only the run lock (taken before run.json is read, so no other run can be writing it) exists
    assert sorted(os.listdir(out)) == [".granary-run.lock", "run.json"], "nothing may be written before the check"
    assert json.loads((out / "run.json").read_text()) == {"fingerprint": fp, "units": {}}
