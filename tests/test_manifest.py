"""Source manifests: glob and listing forms, license overrides, ids, and errors naming file:line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from granary_pipe import licenses
from granary_pipe.config import ConfigError
from granary_pipe.schema import SCHEMA
from granary_pipe.ingest.manifest import list_recordings, load_manifest, recording_id

try:
    from tests.audio_fixtures import DEMO_DIR, demo_listing
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from audio_fixtures import DEMO_DIR, demo_listing

ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def make_corpus(root: Path, names: list[str]) -> Path:
    """A directory with (fake) audio files; ingest does not read them."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"RIFF fake")
    return root


def glob_manifest(root: Path, pattern: str = "audio/*.wav", name: str = "corp", license: str = "CC-BY-4.0") -> Path:
    path = root / "corp.yaml"
    path.write_text(f"name: {name}\nlicense: {license}\naudio: '{pattern}'\n", encoding="utf-8")
    return path


def listing_manifest(root: Path, lines: list, license: str = "CC-BY-4.0") -> tuple[Path, Path]:
    """Manifest + listing; ``lines`` are dicts (JSON-encoded) or raw strings."""
    listing = root / "files.jsonl"
    listing.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines), encoding="utf-8")
    path = root / "corp.yaml"
    path.write_text(f"name: corp\nlicense: '{license}'\nlisting: files.jsonl\n", encoding="utf-8")
    return path, listing


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        list_recordings(path)
    return str(info.value)


# ----------------------------------------------------------------------------- good manifests

def test_demo_manifest_lists_every_file_with_its_license():
    manifest, table = list_recordings(DEMO_DIR / "demo.yaml")
    listing = demo_listing()
    assert table.schema == SCHEMA
    assert table.num_rows == len(listing)
    rows = {Path(r["audio_path"]).name: r for r in table.to_pylist()}
    assert set(rows) == set(listing)
    for name, line in listing.items():
        row = rows[name]
        raw = line.get("license", manifest.license)
        assert row["license_raw"] == raw
        assert row["license"] == licenses.normalize(raw)
        assert row["lang_hint"] == line.get("lang")
        assert row["ref_text"] == line.get("text")
        assert row["source"] == manifest.name
        assert row["id"] == row["recording_id"]
        assert row["offset_s"] == 0.0 and row["drop_reason"] is None
        assert Path(row["audio_path"]).is_absolute() and Path(row["audio_path"]).is_file()
    assert table.column("recording_id").to_pylist() == sorted(table.column("recording_id").to_pylist())


def test_glob_manifest(tmp_path):
    make_corpus(tmp_path, ["audio/b.wav", "audio/a.wav", "audio/notes.txt", "other/c.wav"])
    (tmp_path / "audio" / "dir.wav").mkdir()  # directories never match
    manifest, table = list_recordings(glob_manifest(tmp_path))
    assert manifest.name == "corp"
    paths = sorted(Path(p).name for p in table.column("audio_path").to_pylist())
    assert paths == ["a.wav", "b.wav"]
    assert set(table.column("license").to_pylist()) == {"CC-BY-4.0"}
    assert set(table.column("lang_hint").to_pylist()) == {None}


def test_recursive_glob(tmp_path):
    make_corpus(tmp_path, ["audio/x/1.flac", "audio/y/z/2.flac", "audio/3.mp3"])
    _, table = list_recordings(glob_manifest(tmp_path, "audio/**/*.flac"))
    assert sorted(Path(p).name for p in table.column("audio_path").to_pylist()) == ["1.flac", "2.flac"]


def test_listing_with_per_file_license_override_and_normalisation(tmp_path):
    make_corpus(tmp_path, ["a.wav", "b.wav", "c.wav", "d.wav"])
    path, _ = listing_manifest(tmp_path, [
        {"path": "a.wav", "lang": "en", "text": "hello"},
        {"path": "b.wav", "license": "CC BY 4.0"},
        {"path": "c.wav", "license": "some weird license"},
        {"path": "d.wav", "license": "cc-by-nc-4.0"},
    ], license="CC0")
    _, table = list_recordings(path)
    rows = {Path(r["audio_path"]).name: r for r in table.to_pylist()}
    assert rows["a.wav"]["license"] == "CC0-1.0" and rows["a.wav"]["license_raw"] == "CC0"
    assert rows["a.wav"]["lang_hint"] == "en" and rows["a.wav"]["ref_text"] == "hello"
    assert rows["b.wav"]["license"] == "CC-BY-4.0" and rows["b.wav"]["license_raw"] == "CC BY 4.0"
    assert rows["c.wav"]["license"] == "unknown" and rows["c.wav"]["license_raw"] == "some weird license"
    assert rows["d.wav"]["license"] == "CC-BY-NC-4.0"


def test_unknown_corpus_license_is_unknown_not_an_error(tmp_path):
    make_corpus(tmp_path, ["audio/a.wav"])
    _, table = list_recordings(glob_manifest(tmp_path, license="'All rights reserved'"))
    assert table.column("license").to_pylist() == ["unknown"]


def test_listing_blank_lines_are_ignored(tmp_path):
    make_corpus(tmp_path, ["a.wav", "b.wav"])
    path, _ = listing_manifest(tmp_path, [{"path": "a.wav"}, "", "   ", {"path": "b.wav"}])
    assert list_recordings(path)[1].num_rows == 2


def test_missing_audio_file_is_not_a_manifest_error(tmp_path):
    path, _ = listing_manifest(tmp_path, [{"path": "gone.wav"}])
    _, table = list_recordings(path)  # decode rejects it later, with the reason
    assert table.num_rows == 1
    assert table.column("audio_path")[0].as_py() == str(tmp_path / "gone.wav")


# ----------------------------------------------------------------------------- ids

def test_ids_are_safe_unique_and_stable(tmp_path):
    names = ["audio/a b.wav", "audio/a_b.wav", "audio/ünï cødé.wav", "audio/x.y.z.wav", "audio/-lead.wav",
             "audio/日本語.wav", "audio/" + "long" * 40 + ".wav"]
    make_corpus(tmp_path / "one", names)
    _, t1 = list_recordings(glob_manifest(tmp_path / "one"))
    ids = t1.column("recording_id").to_pylist()
    assert len(ids) == len(names) == len(set(ids))
    for rid in ids:
        assert ID_RE.match(rid), rid
        assert rid.startswith("corp-")
    # same again, and the same corpus moved elsewhere: ids depend only on source name + relative path
    assert list_recordings(glob_manifest(tmp_path / "one"))[1].column("recording_id").to_pylist() == ids
    shutil.copytree(tmp_path / "one", tmp_path / "moved")
    assert list_recordings(tmp_path / "moved" / "corp.yaml")[1].column("recording_id").to_pylist() == ids


def test_glob_and_listing_give_the_same_ids(tmp_path):
    make_corpus(tmp_path / "g", ["audio/a.wav", "audio/b.wav"])
    _, by_glob = list_recordings(glob_manifest(tmp_path / "g"))
    make_corpus(tmp_path / "l", ["audio/a.wav", "audio/b.wav"])
    path, _ = listing_manifest(tmp_path / "l", [{"path": "audio/b.wav"}, {"path": "audio/a.wav"}])
    _, by_listing = list_recordings(path)
    assert by_glob.column("recording_id").to_pylist() == by_listing.column("recording_id").to_pylist()


def test_recording_id_function():
    rid = recording_id("src", "dir/some file.flac")
    assert rid == recording_id("src", "dir/some file.flac")
    assert ID_RE.match(rid) and rid.startswith("src-dir_some_file-")
    assert rid != recording_id("src", "dir/some_file.flac")
    assert rid != recording_id("other", "dir/some file.flac")
    assert "." not in recording_id("s", "a.b.c.wav")


# ----------------------------------------------------------------------------- errors

def test_malformed_json_line_names_file_and_line(tmp_path):
    make_corpus(tmp_path, ["a.wav", "b.wav"])
    path, listing = listing_manifest(tmp_path, [{"path": "a.wav"}, '{"path": "b.wav",'])
    msg = error_of(path)
    assert f"{listing}:2:" in msg and "not valid JSON" in msg


def test_json_line_that_is_not_an_object(tmp_path):
    path, listing = listing_manifest(tmp_path, ['["a.wav"]'])
    msg = error_of(path)
    assert f"{listing}:1:" in msg and "object" in msg


def test_unknown_key_in_a_line_names_file_line_and_key(tmp_path):
    make_corpus(tmp_path, ["a.wav", "b.wav"])
    path, listing = listing_manifest(tmp_path, [{"path": "a.wav"}, {"path": "b.wav", "speeker": "x"}])
    msg = error_of(path)
    assert f"{listing}:2:" in msg and "speeker" in msg and "unknown key" in msg


def test_line_without_path(tmp_path):
    path, listing = listing_manifest(tmp_path, [{"lang": "en"}])
    msg = error_of(path)
    assert f"{listing}:1:" in msg and "path" in msg


def test_duplicate_path_names_both_lines(tmp_path):
    make_corpus(tmp_path, ["a.wav", "b.wav"])
    path, listing = listing_manifest(tmp_path, [{"path": "a.wav"}, {"path": "b.wav"}, {"path": "a.wav"}])
    msg = error_of(path)
    assert f"{listing}:3:" in msg and "a.wav" in msg and "line 1" in msg


def test_duplicate_path_spelled_differently_is_still_a_duplicate(tmp_path):
    # the same file twice would give two rows (two ids) for one recording
    make_corpus(tmp_path, ["audio/a.wav"])
    path, listing = listing_manifest(tmp_path, [{"path": "audio/a.wav"}, {"path": "./audio/a.wav"}])
    msg = error_of(path)
    assert f"{listing}:2:" in msg


def test_glob_matching_nothing(tmp_path):
    make_corpus(tmp_path, ["audio/a.flac"])
    path = glob_manifest(tmp_path, "audio/*.wav")
    msg = error_of(path)
    assert str(path) in msg and "audio/*.wav" in msg and "matches no file" in msg


def test_empty_listing(tmp_path):
    path, _ = listing_manifest(tmp_path, [])
    assert "lists no audio" in error_of(path)


def test_missing_listing_file(tmp_path):
    path = tmp_path / "corp.yaml"
    path.write_text("name: corp\nlicense: CC0-1.0\nlisting: nothere.jsonl\n")
    msg = error_of(path)
    assert str(tmp_path / "nothere.jsonl") in msg and "not found" in msg


def test_both_audio_and_listing(tmp_path):
    path = tmp_path / "corp.yaml"
    path.write_text("name: corp\nlicense: CC0-1.0\naudio: '*.wav'\nlisting: files.jsonl\n")
    msg = error_of(path)
    assert str(path) in msg and "exactly one" in msg


def test_neither_audio_nor_listing(tmp_path):
    path = tmp_path / "corp.yaml"
    path.write_text("name: corp\nlicense: CC0-1.0\n")
    assert "exactly one" in error_of(path)


def test_unknown_manifest_key_and_bad_name(tmp_path):
    path = tmp_path / "corp.yaml"
    path.write_text("name: corp\nlicense: CC0-1.0\naudio: '*.wav'\nhours: 3\n")
    msg = error_of(path)
    assert f"{path}:4:" in msg and "hours" in msg and "unknown key" in msg
    path.write_text("name: 'bad name!'\nlicense: CC0-1.0\naudio: '*.wav'\n")
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    assert f"{path}:1:" in str(info.value) and "name" in str(info.value)


def test_missing_manifest_file(tmp_path):
    assert "no such file" in error_of(tmp_path / "nope.yaml")
