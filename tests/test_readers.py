"""Readers: each layout on a tiny synthetic tree that mimics it, with real FLAC/WAV audio."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from granary_pipe.config import ConfigError
from granary_pipe.ingest import readers, readers_archives
from granary_pipe.ingest.source import CATALOG_ONLY, load_manifest

SR = 16000


def audio_bytes(fmt: str = "FLAC", seconds: float = 0.2, freq: float = 440.0) -> bytes:
    t = np.arange(int(SR * seconds)) / SR
    buf = io.BytesIO()
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format=fmt, subtype=subtype)
    return buf.getvalue()


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def manifest(root: Path, **fields) -> Path:
    doc = {"name": "corp", "license": "CC-BY-4.0", **fields}
    path = root / "corp.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def entries(path: Path, cache: Path, **kw) -> list[readers.Entry]:
    return readers.read_entries(load_manifest(path), path, cache_dir=cache, **kw)


def decodes(path: str) -> bool:
    data, sr = sf.read(path)
    return sr == SR and len(data) > 0


# ----------------------------------------------------------------------------- folder, glob, jsonl

def test_folder_tree_under_url_lists_audio_only(tmp_path):
    root = tmp_path / "corpus"
    put(root / "a" / "x.flac", audio_bytes())
    put(root / "a" / "b" / "y.wav", audio_bytes("WAV"))
    put(root / "a" / "notes.txt", "not audio")
    path = manifest(tmp_path, url="corpus", reader="folder", reader_options={"lang": "de"})
    got = entries(path, tmp_path / "cache")
    assert [e.key for e in got] == ["a/b/y.wav", "a/x.flac"]
    assert all(Path(e.path).is_absolute() and decodes(e.path) for e in got)
    assert {e.lang for e in got} == {"de"} and {e.license for e in got} == {None}


def test_folder_pattern_option(tmp_path):
    put(tmp_path / "c" / "x.flac", audio_bytes())
    put(tmp_path / "c" / "y.wav", audio_bytes("WAV"))
    path = manifest(tmp_path, url="c", reader="folder", reader_options={"pattern": "**/*.wav"})
    assert [e.key for e in entries(path, tmp_path / "cache")] == ["y.wav"]


def test_audio_glob_keeps_its_semantics(tmp_path):
    put(tmp_path / "audio" / "b.flac", audio_bytes())
    put(tmp_path / "audio" / "a.flac", audio_bytes())
    path = manifest(tmp_path, audio="audio/*.flac")
    got = entries(path, tmp_path / "cache")
    assert [e.key for e in got] == ["audio/a.flac", "audio/b.flac"]
    assert got[0].path == str((tmp_path / "audio" / "a.flac").resolve())


def test_jsonl_listing_carries_license_lang_text(tmp_path):
    put(tmp_path / "a.flac", audio_bytes())
    put(tmp_path / "listing.jsonl", "\n".join(json.dumps(x) for x in [
        {"path": "a.flac", "lang": "en", "text": "hello", "license": "CC0"}, {"path": "./sub/../b.flac"}]) + "\n")
    got = entries(manifest(tmp_path, listing="listing.jsonl"), tmp_path / "cache")
    assert [(e.key, e.license, e.lang, e.text) for e in got] == [("a.flac", "CC0", "en", "hello"),
                                                                 ("b.flac", None, None, None)]


def test_jsonl_duplicate_names_both_lines(tmp_path):
    put(tmp_path / "l.jsonl", '{"path": "a.flac"}\n{"path": "./a.flac"}\n')
    with pytest.raises(ConfigError, match=r"l\.jsonl:2: .*already listed on line 1"):
        entries(manifest(tmp_path, listing="l.jsonl"), tmp_path / "cache")


# ----------------------------------------------------------------------------- TSV

def test_common_voice_tsv(tmp_path):
    cv = tmp_path / "cv-corpus" / "it"
    put(cv / "clips" / "common_voice_it_1.mp3", audio_bytes("WAV"))  # content is WAV: decoders sniff
    put(cv / "clips" / "common_voice_it_2.mp3", audio_bytes("WAV"))
    put(cv / "train.tsv", "client_id\tpath\tsentence\tup_votes\tlocale\n"
                          'c1\tcommon_voice_it_1.mp3\tDisse "ciao" e andò.\t2\tit\n'
                          "\n"
                          "c2\tcommon_voice_it_2.mp3\tSeconda frase.\t3\tit\n")
    got = entries(manifest(tmp_path, listing="cv-corpus/it/train.tsv", reader="tsv"), tmp_path / "cache")
    assert [e.key for e in got] == ["cv-corpus/it/clips/common_voice_it_1.mp3", "cv-corpus/it/clips/common_voice_it_2.mp3"]
    assert got[0].text == 'Disse "ciao" e andò.' and got[0].lang == "it" and got[1].text == "Seconda frase."
    assert all(Path(e.path).is_file() for e in got)


def test_tsv_url_directory_with_listing_option_and_path_format(tmp_path):
    root = tmp_path / "transcribed_data" / "en"
    put(root / "2018" / "20180313-0900-PLENARY-15-en_1.ogg", audio_bytes("OGG"))
    put(root / "asr_train.tsv", "id\traw_text\tnormalized_text\tspeaker_id\n"
                                "20180313-0900-PLENARY-15-en_1\tHello.\thello\t42\n")
    path = manifest(tmp_path, url="transcribed_data/en", reader="tsv", reader_options={
        "listing": "asr_train.tsv", "path_column": "id", "path_format": "{id:.4}/{id}.ogg",
        "text_column": "normalized_text", "lang_column": None, "lang": "en"})
    (e,) = entries(path, tmp_path / "cache")
    assert e.key == "2018/20180313-0900-PLENARY-15-en_1.ogg" and e.text == "hello" and e.lang == "en"
    assert Path(e.path).is_file()


@pytest.mark.parametrize(("body", "message"), [
    ("client\tfile\n", r"no 'path' column"),
    ("path\tsentence\n../../etc/passwd\tx\n", r":2: path .* leaves the audio directory"),
    ("path\tsentence\na.mp3\tx\na.mp3\ty\n", r":3: path 'a.mp3' already listed on line 2"),
    ("", r"empty TSV"),
])
def test_tsv_errors_name_file_and_line(tmp_path, body, message):
    put(tmp_path / "t.tsv", body)
    with pytest.raises(ConfigError, match=message):
        entries(manifest(tmp_path, listing="t.tsv", reader="tsv"), tmp_path / "cache")


@pytest.mark.parametrize("reader", ["jsonl", "tsv"])
def test_directory_url_without_listing_option_names_its_reader(tmp_path, reader):
    (tmp_path / "corpus").mkdir()
    path = manifest(tmp_path, url="corpus", reader=reader, reader_options={"listing": ""})
    with pytest.raises(ConfigError, match=rf"reader '{reader}' with a directory 'url' needs reader_options\.listing"):
        entries(path, tmp_path / "cache")


# ----------------------------------------------------------------------------- Parquet

def hf_parquet(path: Path, rows: list[dict]) -> Path:
    audio_t = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    table = pa.table({
        "audio": pa.array([r["audio"] for r in rows], audio_t),
        "transcription": [r.get("text") for r in rows],
        "language": [r.get("lang") for r in rows],
        "license": [r.get("license") for r in rows],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=2)
    return path


def test_parquet_audio_struct_is_materialised_once(tmp_path):
    flac, wav = audio_bytes(), audio_bytes("WAV", freq=220)
    hf_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", [
        {"audio": {"bytes": flac, "path": "clip one.flac"}, "text": "one", "lang": "fr"},
        {"audio": {"bytes": wav, "path": None}, "text": "two", "lang": "French", "license": "CC0-1.0"},
        {"audio": {"bytes": flac, "path": "x/clip3.flac"}, "text": "three"},
    ])
    path = manifest(tmp_path, url="data", reader="parquet")
    cache = tmp_path / "cache"
    got = entries(path, cache)
    assert [e.key for e in got] == ["train-00000-of-00001/00000000-clip_one.flac",
                                    "train-00000-of-00001/00000001-audio.wav",
                                    "train-00000-of-00001/00000002-clip3.flac"]
    assert [e.text for e in got] == ["one", "two", "three"]
    assert [e.lang for e in got] == ["fr", None, None]  # "French" is not a code: dropped, not guessed
    assert [e.license for e in got] == [None, "CC0-1.0", None]
    assert Path(got[0].path).read_bytes() == flac and Path(got[1].path).read_bytes() == wav
    assert all(decodes(e.path) and str(cache.resolve()) in e.path for e in got)
    mtimes = [os.stat(e.path).st_mtime_ns for e in got]
    again = entries(path, cache)  # same paths, nothing rewritten
    assert again == got and [os.stat(e.path).st_mtime_ns for e in again] == mtimes


def test_parquet_without_materialising_writes_nothing(tmp_path):
    hf_parquet(tmp_path / "d" / "a.parquet", [{"audio": {"bytes": audio_bytes(), "path": "a.flac"}}])
    got = entries(manifest(tmp_path, url="d/a.parquet", reader="parquet"), tmp_path / "cache", materialize=False)
    assert len(got) == 1 and not Path(got[0].path).exists() and not (tmp_path / "cache").exists()


def test_parquet_binary_column_and_missing_audio_column(tmp_path):
    pq.write_table(pa.table({"speech": pa.array([audio_bytes("WAV")], pa.binary()), "sentence": ["hi"]}),
                   tmp_path / "b.parquet")
    got = entries(manifest(tmp_path, url="b.parquet", reader="parquet", reader_options={"audio_column": "speech"}),
                  tmp_path / "cache")
    assert got[0].key == "b/00000000-audio.wav" and got[0].text == "hi" and decodes(got[0].path)
    with pytest.raises(ConfigError, match="no audio column 'audio'"):
        entries(manifest(tmp_path, url="b.parquet", reader="parquet"), tmp_path / "cache")


# ----------------------------------------------------------------------------- WebDataset

def make_tar(path: Path, members: dict[str, bytes], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_tars_are_extracted_with_metadata(tmp_path):
    flac, wav = audio_bytes(), audio_bytes("WAV")
    make_tar(tmp_path / "shards" / "en-000000.tar", {
        "s1.flac": flac, "s1.json": json.dumps({"text": "first", "lang": "en", "license": "CC0-1.0"}).encode(),
        "sub/s2.wav": wav, "sub/s2.txt": b"second\n", "s3.json": b"{}",  # s3: no audio, skipped
    })
    make_tar(tmp_path / "shards" / "de-000000.tar.gz", {"k.flac": flac}, gz=True)
    got = entries(manifest(tmp_path, url="shards", reader="webdataset"), tmp_path / "cache")
    assert [(e.key, e.text, e.lang, e.license) for e in got] == [
        ("de-000000/k.flac", None, None, None),
        ("en-000000/s1.flac", "first", "en", "CC0-1.0"),
        ("en-000000/sub/s2.wav", "second", None, None),
    ]
    assert Path(got[1].path).read_bytes() == flac and all(decodes(e.path) for e in got)


def test_webdataset_refuses_members_leaving_the_archive(tmp_path):
    make_tar(tmp_path / "evil.tar", {"../../escape.flac": audio_bytes()})
    with pytest.raises(ConfigError, match="leaves the archive"):
        entries(manifest(tmp_path, url="evil.tar", reader="webdataset"), tmp_path / "cache")
    assert not (tmp_path / "escape.flac").exists()


# ----------------------------------------------------------------------------- corpus trees

def test_librilight_tree(tmp_path):
    book = tmp_path / "ll" / "small" / "100" / "sea_fairies_0812_librivox_64kb_mp3"
    put(book / "01_baum_sea_fairies_64kb.flac", audio_bytes())
    put(book / "01_baum_sea_fairies_64kb.json", json.dumps(
        {"speaker": "100", "book_meta": {"id": "812", "title": "The Sea Fairies", "language": "English"}, "snr": 5.1}))
    put(book / "02_no_json.flac", audio_bytes())
    got = entries(manifest(tmp_path, url="ll", reader="librilight", license="public-domain"), tmp_path / "cache")
    assert [e.key for e in got] == ["small/100/sea_fairies_0812_librivox_64kb_mp3/01_baum_sea_fairies_64kb.flac",
                                    "small/100/sea_fairies_0812_librivox_64kb_mp3/02_no_json.flac"]
    assert {e.lang for e in got} == {"en"} and {e.text for e in got} == {None}
    put(book / "02_no_json.json", "{not json")
    with pytest.raises(ConfigError, match=r"02_no_json\.json: not valid JSON"):
        entries(manifest(tmp_path, url="ll", reader="librilight"), tmp_path / "cache")


def test_librispeech_tree(tmp_path):
    chap = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    put(chap / "84-121123-0000.flac", audio_bytes())
    put(chap / "84-121123-0001.flac", audio_bytes())
    put(chap / "84-121123.trans.txt", "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n")
    got = entries(manifest(tmp_path, url="LibriSpeech", reader="librispeech"), tmp_path / "cache")
    assert [(e.key, e.text, e.lang) for e in got] == [
        ("dev-clean/84/121123/84-121123-0000.flac", "GO DO YOU HEAR", "en"),
        ("dev-clean/84/121123/84-121123-0001.flac", "BUT IN LESS THAN FIVE MINUTES", "en")]
    put(chap / "84-121123.trans.txt", "84-121123-0000\n")
    with pytest.raises(ConfigError, match=r"trans\.txt:1: expected 'UTTERANCE-ID TEXT'"):
        entries(manifest(tmp_path, url="LibriSpeech", reader="librispeech"), tmp_path / "cache")


def test_mls_tree(tmp_path):
    split = tmp_path / "mls_german" / "dev"
    put(split / "audio" / "1844" / "931" / "1844_931_000003.flac", audio_bytes())
    put(split / "audio" / "1844" / "931" / "1844_931_000004.opus", audio_bytes("OGG"))
    put(split / "transcripts.txt", "1844_931_000003\tund dann ging er\n1844_931_000004\tnach hause\n")
    got = entries(manifest(tmp_path, url="mls_german", reader="mls"), tmp_path / "cache")
    assert [(e.key, e.text, e.lang) for e in got] == [
        ("dev/audio/1844/931/1844_931_000003.flac", "und dann ging er", "de"),
        ("dev/audio/1844/931/1844_931_000004.opus", "nach hause", "de")]


# ----------------------------------------------------------------------------- remote, options, catalog-only

def test_remote_url_is_copied_once_into_the_cache(tmp_path):
    import fsspec
    fs = fsspec.filesystem("memory")
    root = f"/granary-test-{os.getpid()}"
    fs.pipe(f"{root}/spk/a.flac", audio_bytes())
    fs.pipe(f"{root}/spk/b.wav", audio_bytes("WAV"))
    fs.pipe(f"{root}/readme.txt", b"x")
    try:
        path = manifest(tmp_path, url=f"memory://{root}", reader="folder", reader_options={"include": "spk/*"})
        got = entries(path, tmp_path / "cache")
        assert [e.key for e in got] == ["spk/a.flac", "spk/b.wav"]
        assert all("download" in e.path and decodes(e.path) for e in got)
        assert not any(p.name == "readme.txt" for p in (tmp_path / "cache").rglob("*"))
        mtime = os.stat(got[0].path).st_mtime_ns
        assert entries(path, tmp_path / "cache") == got and os.stat(got[0].path).st_mtime_ns == mtime
    finally:
        fs.rm(root, recursive=True)


def test_keys_do_not_depend_on_the_cache_location(tmp_path):
    hf_parquet(tmp_path / "d" / "s.parquet", [{"audio": {"bytes": audio_bytes(), "path": "a.flac"}}])
    path = manifest(tmp_path, url="d", reader="parquet")
    a, b = entries(path, tmp_path / "c1"), entries(path, tmp_path / "c2")
    assert [e.key for e in a] == [e.key for e in b] and a[0].path != b[0].path


def test_unknown_reader_option_is_named(tmp_path):
    path = manifest(tmp_path, url="x", reader="librispeech", reader_options={"paterns": ["*"]})
    with pytest.raises(ConfigError, match=r"reader_options: paterns: unknown option for reader 'librispeech'"):
        entries(path, tmp_path / "cache")


def test_url_without_reader_and_bad_reader_are_manifest_errors(tmp_path):
    with pytest.raises(ConfigError, match="'url' needs 'reader'"):
        load_manifest(manifest(tmp_path, url="x"))
    with pytest.raises(ConfigError, match="reader"):
        load_manifest(manifest(tmp_path, url="x", reader="zip"))
    with pytest.raises(ConfigError, match="exactly one"):
        load_manifest(manifest(tmp_path, url="x", reader="folder", audio="*.wav"))


def test_catalog_only_manifest_loads_but_cannot_be_listed(tmp_path):
    catalog = Path(__file__).resolve().parents[1] / "manifests" / "catalog" / "librispeech.yaml"
    m = load_manifest(catalog)
    assert m.catalog is not None and not m.runnable and m.reader == "librispeech"
    with pytest.raises(ConfigError) as info:
        readers.read_entries(m, catalog, cache_dir=tmp_path)
    assert CATALOG_ONLY in str(info.value) and "catalog entry: set audio/listing/url to a local copy" in str(info.value)


def test_missing_url_target_and_empty_source(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        entries(manifest(tmp_path, url="nowhere", reader="folder"), tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="lists no audio"):
        entries(manifest(tmp_path, url="empty", reader="folder"), tmp_path / "cache")


@pytest.mark.parametrize(("data", "ext"), [
    (audio_bytes("WAV"), ".wav"), (audio_bytes("FLAC"), ".flac"), (audio_bytes("OGG"), ".ogg"),
    (b"ID3\x03\x00", ".mp3"), (b"\xff\xfb\x90\x00", ".mp3"), (b"\x00\x00\x00\x18ftypM4A ", ".m4a"),
    (b"\x1aE\xdf\xa3", ".webm"), (b"hello", ".bin"),
])
def test_sniff_ext(data, ext):
    assert readers_archives.sniff_ext(data) == ext
