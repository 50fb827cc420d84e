"""The listing planned out of core (ingest/spill.py + listing.py) gives the units, ids, rows and
fingerprint the in-memory planning gave, and the same duplicate errors.

The oracles below are the in-memory code as it was before the listing went out of core: the
whole table built from ``read_entries`` (which keeps the in-memory ``check_unique``), sorted in
Python, fingerprinted as one JSON list per column.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from granary_pipe import licenses, schema
from granary_pipe.config import ConfigError
from granary_pipe.ingest import spill
from granary_pipe.ingest.manifest import list_recordings, load_manifest, recording_id, sort_recordings
from granary_pipe.ingest.readers import read_entries
from granary_pipe.listing import FINGERPRINT_SKIPS, _ingest, file_fingerprint, plan_listing

RESOLVED = {"stages": [{"use": "audio.decode", "resources": {"cpus": 0.25}}, {"use": "license.gate"}],
            "units": {"recordings_per_unit": 3}}


def old_list_recordings(manifest_path: Path) -> pa.Table:
    """Ingest as it was: every entry in memory, rows sorted in Python, one table."""
    manifest_path = Path(manifest_path).resolve()
    manifest = load_manifest(manifest_path)
    rows = []
    for e in read_entries(manifest, manifest_path):
        raw_license = e.license if e.license is not None else manifest.license
        rid = recording_id(manifest.name, e.key)
        rows.append({"id": rid, "recording_id": rid, "source": manifest.name, "audio_path": e.path,
                     "audio_relpath": e.key if not e.key.startswith("/") else posixpath.basename(e.key),
                     "offset_s": 0.0, "license": licenses.normalize(raw_license), "license_raw": raw_license,
                     "lang_hint": e.lang, "ref_text": e.text})
    rows.sort(key=lambda r: r["recording_id"])
    return schema.make_table(rows)


def old_fingerprint(resolved: dict, recordings: pa.Table) -> str:
    """The fingerprint as it was: each column's whole JSON list at once."""
    content = {
        "stages": [{k: v for k, v in s.items() if k not in ("resources", "workers")} for s in resolved["stages"]],
        "recordings_per_unit": resolved["units"]["recordings_per_unit"],
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode())
    for col in recordings.column_names:
        if col not in FINGERPRINT_SKIPS:
            values = json.dumps(recordings.column(col).to_pylist(), ensure_ascii=False, default=str)
            digest.update(f"\0{col}\0{values}".encode())
    return digest.hexdigest()


NAMES = ["zeta/b.flac", "alpha/a.flac", "Übung/straße.wav", "日本語/音声.flac", "emoji/🎙 take \"1\".wav",
         "back\\slash/x.wav", "space dir/y z.ogg", "m/n.mp3", "c.flac", "B.flac", "a.FLAC", "deep/er/still/q.opus",
         "tab\there.wav", "ctrl/\u2028line.wav"]


def mixed_listing(root: Path, n_extra: int = 0) -> Path:
    """A JSONL listing with every column kind: language hints (valid, absent), reference text
    (unicode, quotes, empty-ish, absent), license overrides (known, unknown, absent), unicode and
    odd paths, files that exist and files that do not."""
    lines = []
    for k, name in enumerate(NAMES + [f"bulk/f{j:05d}.flac" for j in range(n_extra)]):
        line: dict = {"path": f"audio/{name}"}
        if k % 3 == 0:
            line["lang"] = ["en", "de", "ja", "pt-BR"][k % 4]
        if k % 4 == 1:
            line["text"] = ["héllo \"wörld\"", "日本語のテキスト", "tab\tand\nnewline", "  "][k % 4]
        if k % 5 == 2:
            line["license"] = ["CC0-1.0", "cc-by-sa 4.0", "all rights reserved", "MIT"][k % 4]
        if k % 2 == 0:
            path = root / "audio" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not audio")
        lines.append(json.dumps(line, ensure_ascii=k % 2 == 0))
    (root / "listing.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = root / "src.yaml"
    manifest.write_text(yaml.safe_dump({"name": "mix", "license": "CC-BY-4.0", "listing": "listing.jsonl"}),
                        encoding="utf-8")
    return manifest


@pytest.fixture
def small_batches(monkeypatch):
    """Spill, merge and re-read in pieces much smaller than the listing, so every boundary is
    crossed: many runs, merged three at a time over several levels, two rows per chunk."""
    monkeypatch.setattr(spill, "BATCH_ROWS", 4)
    monkeypatch.setattr(spill, "FAN_IN", 3)
    monkeypatch.setattr(spill, "CHUNK_ROWS", 2)


@pytest.mark.parametrize("per_unit", [1, 3, 7, 1000])
def test_units_rows_and_fingerprint_equal_the_in_memory_planning(tmp_path, small_batches, per_unit):
    manifest = mixed_listing(tmp_path / "corpus", n_extra=23)
    old = old_list_recordings(manifest)
    work = tmp_path / "work"
    work.mkdir()
    resolved = {**RESOLVED, "units": {"recordings_per_unit": per_unit}}
    got = _ingest(str(manifest), resolved, per_unit, str(work / "listing.arrow"))

    assert got["recordings"] == old.num_rows == len(NAMES) + 23
    assert got["fingerprint"] == old_fingerprint(resolved, old)
    n_units = -(-old.num_rows // per_unit)
    assert got["unit_ids"] == [f"u{k:06d}" for k in range(n_units)]
    with pa.memory_map(str(work / "listing.arrow")) as src:
        reader = pa.ipc.open_file(src)
        assert reader.num_record_batches == n_units
        assert reader.schema == old.schema
        for k in range(n_units):
            batch = pa.Table.from_batches([reader.get_batch(k)])
            want = old.slice(k * per_unit, per_unit)
            want = schema.set_column(want, "unit", [got["unit_ids"][k]] * want.num_rows)
            assert batch.to_pylist() == want.to_pylist()
    # the spill and DuckDB's temporary files are gone; only the listing file is left
    assert sorted(p.name for p in work.iterdir()) == ["listing.arrow"]


def test_the_streamed_fingerprint_is_the_whole_tables_even_with_nulls_and_unicode(tmp_path):
    """file_fingerprint over a file of several batches == the old digest of the whole table, for
    columns that are all null, partly null, unicode, floats and lists."""
    rows = [{"id": f"x{k}", "recording_id": f"x{k}", "source": "s", "audio_path": f"/ä/{k} \"q\".wav",
             "offset_s": k / 3, "lang_hint": None if k % 2 else "ja", "ref_text": "改行\n" * (k % 3) or None,
             "flags": ["a", "ü"] if k % 4 == 0 else None, "duration_s": None if k % 5 else 1e-7 * k}
            for k in range(11)]
    table = schema.make_table(rows)
    path = tmp_path / "l.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for start, size in ((0, 1), (1, 4), (5, 0), (5, 6)):
            writer.write_table(table.slice(start, size), max_chunksize=max(size, 1))
    assert file_fingerprint(RESOLVED, path) == old_fingerprint(RESOLVED, table)
    changed = schema.set_column(table, "ref_text", ["x"] + table.column("ref_text").to_pylist()[1:])
    assert old_fingerprint(RESOLVED, changed) != old_fingerprint(RESOLVED, table)


def test_plan_listing_in_its_child_matches_the_oracle(tmp_path):
    manifest = mixed_listing(tmp_path / "corpus", n_extra=5)
    old = old_list_recordings(manifest)
    work = tmp_path / "work"
    work.mkdir()
    listing = plan_listing(manifest, RESOLVED, 3, work)
    assert listing.fingerprint == old_fingerprint(RESOLVED, old)
    units = list(listing.units(listing.unit_ids))
    assert [u.table.column("id").to_pylist() for u in units] == [
        old.column("id").to_pylist()[k:k + 3] for k in range(0, old.num_rows, 3)]
    assert listing.ingest["peak_rss_mb"] > 0


def test_list_recordings_is_the_in_memory_table(tmp_path, small_batches):
    manifest = mixed_listing(tmp_path / "corpus", n_extra=9)
    _, table = list_recordings(manifest)
    assert table.to_pylist() == old_list_recordings(manifest).to_pylist()
    assert table.schema == schema.SCHEMA


def _listing(root: Path, paths: list[str]) -> Path:
    (root / "l.jsonl").write_text("".join(json.dumps({"path": p}) + "\n" for p in paths), encoding="utf-8")
    manifest = root / "m.yaml"
    manifest.write_text("name: dup\nlicense: CC0-1.0\nlisting: l.jsonl\n", encoding="utf-8")
    return manifest


def _both_errors(manifest: Path, work: Path) -> tuple[str, str]:
    with pytest.raises(ConfigError) as mem:
        read_entries(load_manifest(manifest), manifest)
    with pytest.raises(ConfigError) as disk:
        sort_recordings(manifest, work)
    return str(mem.value), str(disk.value)


@pytest.mark.parametrize("case", ["same key", "symlink", "hard link", "dotdot", "missing twice", "file before key",
                                  "key before file"])
def test_duplicates_are_refused_with_the_in_memory_message(tmp_path, small_batches, case):
    root = tmp_path / "c"
    (root / "audio").mkdir(parents=True)
    for name in ("a.wav", "b.wav", "c.wav"):
        (root / "audio" / name).write_bytes(b"x")
    filler = [f"audio/missing{k}.wav" for k in range(9)]  # spread the lines over several spill batches
    if case == "same key":
        paths = ["audio/a.wav", *filler, "audio/b.wav", "audio/a.wav"]
    elif case == "symlink":
        (root / "audio" / "alias.wav").symlink_to("a.wav")
        paths = ["audio/a.wav", *filler, "audio/alias.wav"]
    elif case == "hard link":
        os.link(root / "audio" / "b.wav", root / "audio" / "hard.wav")
        paths = [*filler, "audio/hard.wav", "audio/c.wav", "audio/b.wav"]
    elif case == "dotdot":
        (root / "audio" / "sub").mkdir()
        paths = ["audio/sub/../a.wav", *filler, str(root / "audio" / "a.wav")]
    elif case == "missing twice":
        (root / "audio" / "gone").symlink_to("nowhere")
        paths = ["audio/nowhere/x.wav", *filler, "audio/gone/x.wav"]
    elif case == "file before key":  # line 3 repeats line 1's file, line 5 line 2's key: line 3 is named
        (root / "audio" / "alias.wav").symlink_to("a.wav")
        paths = ["audio/a.wav", "audio/b.wav", "audio/alias.wav", *filler, "audio/b.wav"]
    else:  # line 3 repeats line 2's key before line 5 repeats line 1's file
        (root / "audio" / "alias.wav").symlink_to("a.wav")
        paths = ["audio/a.wav", "audio/b.wav", "audio/b.wav", *filler, "audio/alias.wav"]
    manifest = _listing(root, paths)
    mem, disk = _both_errors(manifest, tmp_path / "work")
    assert disk == mem
    assert "already listed" in disk and f"{root / 'l.jsonl'}:" in disk
    if case in ("same key", "key before file", "dotdot"):
        assert "is the same file as" not in disk
    else:
        assert "is the same file as" in disk and "list each recording once" in disk


def test_a_duplicate_without_listing_lines_names_the_manifest(tmp_path):
    """Readers without lines (a glob): both in-memory and out of core name the manifest and reader."""
    root = tmp_path / "c"
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "a.wav").write_bytes(b"x")
    os.link(root / "audio" / "a.wav", root / "audio" / "b.wav")
    manifest = root / "m.yaml"
    manifest.write_text("name: g\nlicense: CC0-1.0\naudio: 'audio/*.wav'\n", encoding="utf-8")
    mem, disk = _both_errors(manifest, tmp_path / "work")
    assert disk == mem and str(manifest) in disk and "'audio/b.wav' is the same file as 'audio/a.wav'" in disk


def test_an_empty_source_is_refused_as_before(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "l.jsonl").write_text("\n\n", encoding="utf-8")
    manifest = root / "m.yaml"
    manifest.write_text("name: e\nlicense: CC0-1.0\nlisting: l.jsonl\n", encoding="utf-8")
    mem, disk = _both_errors(manifest, tmp_path / "work")
    assert disk == mem and disk.endswith("the source lists no audio")


def _big_spill(work: Path, n: int, repeat_at_end: int | None = None) -> spill.EntrySpill:
    """A spill of ``n`` entries of about 2 KB each (long keys, paths and texts), in shuffled id
    order; ``repeat_at_end``: one more entry repeating that entry's key."""
    manifest = work / "m.yaml"
    sp = spill.EntrySpill(work, manifest, "jsonl")
    pad = "p" * 300
    keys = [f"audio/{(k * 7919) % n:06d}/{pad}.flac" for k in range(n)]
    if repeat_at_end is not None:
        keys.append(keys[repeat_at_end])
    for line, key in enumerate(keys, start=1):
        path = f"/nonexistent/{key}"
        rid = recording_id("big", key)
        sp.add(spill.Entry(key, path, where=f"/l.jsonl:{line}"),
               {"id": rid, "recording_id": rid, "source": "big", "audio_path": path, "audio_relpath": key,
                "offset_s": 0.0, "license": "CC0-1.0", "license_raw": "CC0-1.0", "lang_hint": "en",
                "ref_text": pad})
    return sp


def test_more_than_duckdbs_memory_limit_is_checked_and_sorted(tmp_path, monkeypatch):
    """About 120 MB of rows against DuckDB's 32 MB limit: the duplicate check spills instead of
    failing (no retry with a larger limit), and the runs, merged on disk in two levels, give
    Python's order."""
    assert spill.MEMORY_LIMIT == "32MB"
    monkeypatch.setattr(spill, "RETRY_MEMORY_LIMIT", spill.MEMORY_LIMIT)
    monkeypatch.setattr(spill, "FAN_IN", 4)
    n = 60_000
    rows = _big_spill(tmp_path / "w1", n).finish()
    ids = [i for t in rows.tables(5000) for i in t.column("id").to_pylist()]
    assert len(ids) == rows.count == n
    assert ids == sorted(recording_id("big", f"audio/{k:06d}/{'p' * 300}.flac") for k in range(n))


def test_a_duplicate_is_found_beyond_the_memory_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "RETRY_MEMORY_LIMIT", spill.MEMORY_LIMIT)
    with pytest.raises(ConfigError) as err:
        _big_spill(tmp_path / "w2", 60_000, repeat_at_end=12_345).finish()
    assert str(err.value).startswith("/l.jsonl:60001: path 'audio/")
    assert str(err.value).endswith("already listed on line 12346")


def test_duckdb_out_of_memory_is_retried_with_a_larger_limit(tmp_path, monkeypatch):
    """Below what DuckDB's operators need for themselves, the check runs out of memory; the retry
    under RETRY_MEMORY_LIMIT finds the duplicate all the same (and without it, the error shows)."""
    import duckdb

    monkeypatch.setattr(spill, "MEMORY_LIMIT", "4MB")
    with pytest.raises(ConfigError, match="already listed on line 2"):
        _big_spill(tmp_path / "w3", 20_000, repeat_at_end=1).finish()
    monkeypatch.setattr(spill, "RETRY_MEMORY_LIMIT", "4MB")
    with pytest.raises(duckdb.OutOfMemoryException):
        _big_spill(tmp_path / "w4", 20_000, repeat_at_end=1).finish()
