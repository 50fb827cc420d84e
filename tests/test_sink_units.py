"""The sink (commit_unit, clean_debris) and the engine-agnostic helpers of a run
(units.batches, apply_stage), on tiny synthetic tables."""

from __future__ import annotations

import errno
import hashlib
import json
import random
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from helpers_rundir import file_records, is_committed, plan_units
from granary_pipe import counters, digest, rundir, schema
from granary_pipe.io import sink
from granary_pipe.units import apply_stage, batches
from granary_pipe.schema import SAMPLE_RATE_HZ, SCHEMA, WORK_SCHEMA, make_table
from granary_pipe.stage import Stage
from granary_pipe.ingest.manifest import list_recordings
from granary_pipe.stages.license.gate import LicenseGate

SR = SAMPLE_RATE_HZ


def pcm(seconds: float, freq: float = 300.0) -> bytes:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32).tobytes()


def unit_rows() -> list[dict]:
    """Two recordings (r1: 3 segments, r2: 1) plus a decode failure; 3 kept, 3 rejected."""
    return [
        {"id": "r1_0002", "recording_id": "r1", "offset_s": 9.0, "duration_s": 1.5, "recording_duration_s": 12.0,
         "samples": pcm(1.5, 200), "text": "three", "lang": "en"},
        {"id": "r1_0000", "recording_id": "r1", "offset_s": 0.5, "duration_s": 2.0, "recording_duration_s": 12.0,
         "samples": pcm(2.0, 300), "text": "one", "lang": "en"},
        {"id": "r1_0001", "recording_id": "r1", "offset_s": 4.0, "duration_s": 1.0, "recording_duration_s": 12.0,
         "samples": pcm(1.0, 400), "text": "", "lang": "en", "drop_reason": "filter:empty_text",
         "flags": ["filter:empty_text"]},
        {"id": "r2_0000", "recording_id": "r2", "offset_s": 0.0, "duration_s": 0.75, "recording_duration_s": 5.0,
         "samples": pcm(0.75, 500), "text": "four", "lang": "de"},
        {"id": "r3", "recording_id": "r3", "offset_s": 0.0, "duration_s": None, "recording_duration_s": None,
         "drop_reason": "decode_error: empty file: /x/r3.wav"},
        {"id": "r4", "recording_id": "r4", "offset_s": 0.0, "duration_s": 3.0, "recording_duration_s": 3.0,
         "samples": pcm(3.0), "drop_reason": "license:CC-BY-NC-4.0"},
    ]


KEPT = {"r1_0000", "r1_0002", "r2_0000"}
REJECTED = {"r1_0001", "r3", "r4"}


@pytest.fixture
def committed(tmp_path):
    rows = unit_rows()
    stats = sink.commit_unit(tmp_path, "u000007", make_table(rows, with_samples=True), {"stage_s": {"asr.whisper": 1.5}})
    return tmp_path, rows, stats


# ============================================================================= commit_unit

def test_commit_partitions_rows_exactly(committed):
    run, rows, _ = committed
    udir = rundir.unit_dir(run, "u000007")
    kept = pq.read_table(udir / "kept.parquet")
    rejected = pq.read_table(udir / "rejected.parquet")
    for t in (kept, rejected):
        assert t.schema == SCHEMA  # no samples column, exactly the row schema
        assert "samples" not in t.column_names
        assert set(t.column("unit").to_pylist()) <= {"u000007"}
    kept_ids, rej_ids = kept.column("id").to_pylist(), rejected.column("id").to_pylist()
    assert set(kept_ids) == KEPT and set(rej_ids) == REJECTED
    assert len(kept_ids) + len(rej_ids) == len(rows)
    assert kept_ids == sorted(kept_ids) and rej_ids == sorted(rej_ids)
    assert all(r is None for r in kept.column("drop_reason").to_pylist())
    by_id = {r["id"]: r for r in rejected.to_pylist()}
    for row in rows:
        if row["id"] in REJECTED:
            assert by_id[row["id"]]["drop_reason"] == row["drop_reason"]
            assert by_id[row["id"]]["audio_file"] is None
    assert by_id["r1_0001"]["flags"] == ["filter:empty_text"]


def test_commit_writes_16k_flac_for_kept_rows_only(committed):
    run, rows, _ = committed
    udir = rundir.unit_dir(run, "u000007")
    kept = {r["id"]: r for r in pq.read_table(udir / "kept.parquet").to_pylist()}
    assert sorted(p.name for p in (udir / "audio").iterdir()) == sorted(f"{i}.flac" for i in KEPT)
    source = {r["id"]: np.frombuffer(r["samples"], np.float32) for r in rows if r["id"] in KEPT}
    for rid, row in kept.items():
        assert row["audio_file"] == f"units/u000007/audio/{rid}.flac"
        path = run / row["audio_file"]
        info = sf.info(path)
        assert info.samplerate == SR and info.channels == 1 and info.format == "FLAC"
        audio, _ = sf.read(path, dtype="float32")
        assert audio.size == source[rid].size == round(row["duration_s"] * SR)
        np.testing.assert_allclose(audio, source[rid], atol=2 / 32768)


def test_commit_marker_holds_stats(committed):
    run, rows, stats = committed
    assert is_committed(run, "u000007")
    marker = rundir.read_marker(run, "u000007")
    assert marker == json.loads(json.dumps(stats))
    assert marker["unit"] == "u000007"
    assert marker["rows_in"] == len(rows) == marker["rows_kept"] + marker["rows_rejected"]
    assert (marker["rows_kept"], marker["rows_rejected"]) == (len(KEPT), len(REJECTED))
    assert marker["recordings"] == 4
    assert marker["speech_s_kept"] == pytest.approx(2.0 + 1.5 + 0.75)
    assert marker["audio_s_in"] == pytest.approx(12.0 + 5.0 + 3.0)  # each recording once; r3 has none
    assert marker["max_row_s"] == pytest.approx(3.0)
    assert marker["stage_s"]["asr.whisper"] == 1.5  # the caller's stats are kept
    assert set(marker["stage_s"]) == {"asr.whisper", "sink.write"} and marker["stage_s"]["sink.write"] > 0
    # the sink counts what it saw: the 3 rows still in play, none rejected for missing audio
    assert marker["counts"] == {"sink.write": {"rows_in": 3, "rows_out": 3, "rejected": {"sink:no_audio": 0},
                                               "rejected_s": {"sink:no_audio": 0.0}, "flagged": {"sink:no_audio": 0}}}
    # nothing temporary left behind
    assert [p.name for p in (run / "units").iterdir()] == ["u000007"]
    assert not [p for p in rundir.unit_dir(run, "u000007").rglob("*") if ".tmp" in p.name]


def test_commit_marker_holds_the_digest_of_its_files(committed):
    run, rows, stats = committed
    marker = rundir.read_marker(run, "u000007")
    d = marker[digest.KEY]
    assert d == json.loads(json.dumps(digest.digest_of_unit(run, "u000007")))  # what the files give
    assert (d["rows_in"], d["recordings"], d["with_kept"]) == (6, 4, 2)
    groups = {tuple(g[:6]): g[6:] for g in d["groups"]}
    assert groups[True, "en", None, None, None, None] == [2, 2, 3.5]
    assert groups[False, None, None, None, None, "decode_error: empty file: /x/r3.wav"] == [1, 0, 0.0]
    assert sum(g[6] for g in d["groups"]) == len(rows)
    assert dict(d["examples"])["license:CC-BY-NC-4.0"] == [["r4", "und", None, 3.0]]
    assert d["with_ref"] == 0 and d["wer"] == {} and d["kept_scored"] == [0, 0, 0.0]


def test_marker_is_written_last(tmp_path, monkeypatch):
    seen = {}
    real = sink.write_json_atomic

    def spy(path, data):
        udir = Path(path).parent
        seen["committed_before"] = is_committed(tmp_path, "u000000")
        seen["files"] = sorted(str(p.relative_to(udir)) for p in udir.rglob("*") if p.is_file())
        real(path, data)

    monkeypatch.setattr(sink, "write_json_atomic", spy)
    sink.commit_unit(tmp_path, "u000000", make_table(unit_rows(), with_samples=True), {})
    assert seen["committed_before"] is False
    assert seen["files"] == sorted(["kept.parquet", "rejected.parquet", *(f"audio/{i}.flac" for i in KEPT)])
    assert is_committed(tmp_path, "u000000")


def test_failed_commit_leaves_no_unit_and_no_debris(tmp_path, monkeypatch):
    """A commit that fails removes its temporary directory (a full disk gets its space back); the
    debris of a writer killed mid-commit is removed by the next run's clean_debris."""
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sink.pq, "write_table", boom)
    with pytest.raises(OSError):
        sink.commit_unit(tmp_path, "u000000", make_table(unit_rows(), with_samples=True), {})
    monkeypatch.undo()
    assert not rundir.unit_dir(tmp_path, "u000000").exists()
    assert not is_committed(tmp_path, "u000000")
    assert list((tmp_path / "units").iterdir()) == []
    leftovers = [tmp_path / "units" / ".u000000.tmp-1234abcd" / "audio"]  # a killed writer's
    leftovers[0].mkdir(parents=True)
    assert rundir.clean_debris(tmp_path) == 1
    assert list((tmp_path / "units").iterdir()) == []


def test_recommit_replaces_uncommitted_leftover(tmp_path):
    udir = rundir.unit_dir(tmp_path, "u000003")
    (udir / "audio").mkdir(parents=True)
    (udir / "kept.parquet").write_bytes(b"half a parquet file")
    (udir / "audio" / "stale.flac").write_bytes(b"old")
    assert not is_committed(tmp_path, "u000003")
    sink.commit_unit(tmp_path, "u000003", make_table(unit_rows(), with_samples=True), {})
    assert is_committed(tmp_path, "u000003")
    assert not (udir / "audio" / "stale.flac").exists()
    assert set(pq.read_table(udir / "kept.parquet").column("id").to_pylist()) == KEPT


def test_recommit_replaces_a_committed_unit(tmp_path):
    sink.commit_unit(tmp_path, "u000000", make_table(unit_rows(), with_samples=True), {})
    only = [r for r in unit_rows() if r["id"] == "r2_0000"]
    stats = sink.commit_unit(tmp_path, "u000000", make_table(only, with_samples=True), {})
    udir = rundir.unit_dir(tmp_path, "u000000")
    assert pq.read_table(udir / "kept.parquet").column("id").to_pylist() == ["r2_0000"]
    assert pq.read_table(udir / "rejected.parquet").num_rows == 0
    assert [p.name for p in (udir / "audio").iterdir()] == ["r2_0000.flac"]
    assert rundir.read_marker(tmp_path, "u000000")["rows_in"] == stats["rows_in"] == 1


def test_commit_of_an_all_rejected_unit(tmp_path):
    rows = [r for r in unit_rows() if r["id"] in REJECTED]
    stats = sink.commit_unit(tmp_path, "u000001", make_table(rows, with_samples=True), {})
    udir = rundir.unit_dir(tmp_path, "u000001")
    assert pq.read_table(udir / "kept.parquet").num_rows == 0
    assert pq.read_table(udir / "rejected.parquet").num_rows == len(rows)
    assert list((udir / "audio").iterdir()) == []
    assert stats["rows_kept"] == 0 and stats["speech_s_kept"] == 0.0


# ============================================================================= clean_debris

def test_clean_debris_removes_tmp_and_markerless_dirs_only(tmp_path):
    sink.commit_unit(tmp_path, "u000000", make_table(unit_rows(), with_samples=True), {})
    units = tmp_path / "units"
    (units / ".u000001.tmp-deadbeef" / "audio").mkdir(parents=True)
    (units / "u000002").mkdir()
    (units / "u000002" / "kept.parquet").write_bytes(b"x")
    (units / "README.txt").write_text("not a unit")
    assert rundir.clean_debris(tmp_path) == 2
    assert sorted(p.name for p in units.iterdir()) == ["README.txt", "u000000"]
    assert is_committed(tmp_path, "u000000")
    assert (rundir.unit_dir(tmp_path, "u000000") / "kept.parquet").is_file()
    assert rundir.clean_debris(tmp_path) == 0


def test_clean_debris_without_units_dir(tmp_path):
    assert rundir.clean_debris(tmp_path) == 0
    assert rundir.clean_debris(tmp_path / "missing") == 0


def test_write_json_atomic(tmp_path):
    path = tmp_path / "run.json"
    rundir.write_json_atomic(path, {"b": 1, "a": Path("/x")})
    assert json.loads(path.read_text()) == {"a": "/x", "b": 1}
    rundir.write_json_atomic(path, {"c": 2})
    assert json.loads(path.read_text()) == {"c": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


# ============================================================================= batches

def seg_table(sizes: list[int], rejected_every: int = 0) -> pa.Table:
    """Recordings rec000, rec001, ... with ``sizes[i]`` segment rows each, sorted."""
    rows = []
    for r, n in enumerate(sizes):
        for s in range(n):
            k = len(rows)
            rows.append({"id": f"rec{r:03d}_{s:04d}", "recording_id": f"rec{r:03d}", "offset_s": float(s),
                         "duration_s": 1.0, "license": "CC-BY-4.0",
                         "drop_reason": "x" if rejected_every and k % rejected_every == 0 else None})
    return make_table(rows, with_samples=True)


def check_batches(table: pa.Table, parts: list[pa.Table], batch_size: int) -> None:
    ids = [i for part in parts for i in part.column("id").to_pylist()]
    assert ids == table.column("id").to_pylist()  # every row once, order kept
    owner: dict[str, int] = {}
    for k, part in enumerate(parts):
        recs = part.column("recording_id").to_pylist()
        assert part.num_rows >= 1
        for rec in set(recs):
            assert owner.setdefault(rec, k) == k, f"recording {rec} split across batches"
        if part.num_rows > batch_size:
            assert len(set(recs)) == 1, "an oversize batch must be a single recording"


def test_batches_examples():
    table = seg_table([3, 1, 5, 2, 2])
    parts = batches(table, 4)
    check_batches(table, parts, 4)
    assert [p.num_rows for p in parts] == [4, 5, 4]
    assert [p.num_rows for p in batches(table, 1)] == [3, 1, 5, 2, 2]
    assert [p.num_rows for p in batches(table, 100)] == [13]
    assert batches(seg_table([]), 4) == []


@pytest.mark.parametrize("seed", range(20))
def test_batches_never_split_a_recording(seed):
    rng = random.Random(seed)
    sizes = [rng.randint(1, 9) for _ in range(rng.randint(1, 25))]
    batch_size = rng.randint(1, 12)
    table = seg_table(sizes)
    parts = batches(table, batch_size)
    check_batches(table, parts, batch_size)
    # greedy packing: no two neighbouring batches would have fit in one
    for a, b in zip(parts, parts[1:]):
        first_rec = b.column("recording_id")[0].as_py()
        first_len = b.column("recording_id").to_pylist().count(first_rec)
        assert a.num_rows + first_len > batch_size


# ============================================================================= planning units

def test_plan_units_is_deterministic(tmp_path):
    names = [f"clip_{i:02d}.wav" for i in range(11)]
    for order, root in ((names, tmp_path / "a"), (names[::-1], tmp_path / "b")):
        (root / "audio").mkdir(parents=True)
        for n in order:  # files created in different orders
            (root / "audio" / n).write_bytes(b"x")
        (root / "m.yaml").write_text("name: corp\nlicense: CC0-1.0\naudio: 'audio/*.wav'\n")
    plans = [plan_units(list_recordings(root / "m.yaml")[1], 3) for root in (tmp_path / "a", tmp_path / "b")]
    for plan in plans + [plan_units(list_recordings(tmp_path / "a" / "m.yaml")[1], 3)]:
        assert [u.id for u in plan] == [u.id for u in plans[0]]
        assert [u.table.column("recording_id").to_pylist() for u in plan] == \
               [u.table.column("recording_id").to_pylist() for u in plans[0]]
    assert [u.table.num_rows for u in plans[0]] == [3, 3, 3, 2]


# ============================================================================= apply_stage

class Spy(Stage):
    """Marks active rows and records the recordings of each batch it sees."""

    name: ClassVar[str] = "test.spy"
    seen: ClassVar[list[list[str]]] = []
    batch_size: int = 4

    def process(self, active: pa.Table) -> pa.Table:
        Spy.seen.append(active.column("recording_id").to_pylist())
        return schema.set_column(active, "text", ["seen"] * active.num_rows)


def test_apply_stage_sorts_batches_and_times():
    Spy.seen = []
    table = seg_table([3, 2, 4, 1], rejected_every=4)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    before = {"stage_s": {"audio.decode": 2.0}, "counts": {"audio.decode": counters.empty()}}
    out, stats = apply_stage(Spy(), (shuffled, before))
    timings = stats["stage_s"]
    assert out.schema == WORK_SCHEMA
    assert sorted(out.column("id").to_pylist()) == sorted(table.column("id").to_pylist())
    for row in out.to_pylist():
        assert row["text"] == (None if row["drop_reason"] else "seen")
    # each call saw whole recordings, in recording order, at most batch_size rows (or one recording)
    assert len(Spy.seen) >= 3
    for batch in Spy.seen:
        assert len(batch) <= 4 or len(set(batch)) == 1
    seen_recs = [r for batch in Spy.seen for r in dict.fromkeys(batch)]
    assert seen_recs == sorted(seen_recs) and len(seen_recs) == len(set(seen_recs))
    assert timings["audio.decode"] == 2.0 and timings["test.spy"] >= 0.0
    assert list(stats["counts"]) == ["audio.decode", "test.spy"]
    active = sum(r["drop_reason"] is None for r in out.to_pylist())
    assert stats["counts"]["test.spy"] == {"rows_in": active, "rows_out": active, "rejected": {},
                                           "rejected_s": {}, "flagged": {}}
    _, again = apply_stage(Spy(), (out, stats))
    assert again["stage_s"]["test.spy"] > timings["test.spy"]  # time accumulates per stage name
    assert again["counts"]["test.spy"]["rows_in"] == 2 * active  # and so do counts


def test_apply_stage_offsets_sorted_within_recording():
    Spy.seen = []
    rows = [{"id": f"r_{i}", "recording_id": "r", "offset_s": off, "duration_s": 1.0}
            for i, off in enumerate([5.0, 1.0, 3.0])]
    out, _ = apply_stage(Spy(), (make_table(rows, with_samples=True), {}))
    assert out.column("offset_s").to_pylist() == [1.0, 3.0, 5.0]


def test_apply_stage_with_a_real_stage_and_an_empty_table():
    table = make_table([{"id": "a", "recording_id": "a", "license": "CC-BY-NC-4.0"},
                        {"id": "b", "recording_id": "b", "license": "CC0-1.0"}], with_samples=True)
    out, stats = apply_stage(LicenseGate(), (table, {}))
    assert {r["id"]: r["drop_reason"] for r in out.to_pylist()} == {"a": "license:CC-BY-NC-4.0", "b": None}
    assert "license.gate" in stats["stage_s"]
    assert stats["counts"]["license.gate"] == {"rows_in": 2, "rows_out": 2, "rejected": {"license": 1},
                                               "rejected_s": {"license": 0.0}, "flagged": {"license": 1}}
    empty, stats = apply_stage(LicenseGate(), (make_table([]), {}))
    assert empty.num_rows == 0 and empty.schema == WORK_SCHEMA and "license.gate" in stats["stage_s"]
    assert stats["counts"]["license.gate"]["rows_in"] == 0  # declared rules at 0
    assert stats["counts"]["license.gate"]["rejected"] == {"license": 0}



def test_kept_row_without_audio_is_rejected_not_a_crash(tmp_path):
    """A pipeline without audio.decode leaves kept rows with no samples: the sink rejects them
    with a reason (nothing lost, the unit commits) instead of failing the unit."""
    rows = unit_rows()
    rows[1] = {**rows[1], "samples": None}
    rows[3] = {**rows[3], "samples": b""}
    stats = sink.commit_unit(tmp_path, "u000001", make_table(rows, with_samples=True), {})
    unit = rundir.unit_dir(tmp_path, "u000001")
    kept = pq.read_table(unit / "kept.parquet").to_pylist()
    rejected = {r["id"]: r["drop_reason"] for r in pq.read_table(unit / "rejected.parquet").to_pylist()}
    assert [r["id"] for r in kept] == ["r1_0002"]
    assert rejected["r1_0000"] == rejected["r2_0000"] == "sink:no_audio"
    assert rejected["r4"] == "license:CC-BY-NC-4.0"  # an earlier reason is kept
    assert stats["rows_kept"] + stats["rows_rejected"] == len(rows)
    assert sorted(p.name for p in (unit / "audio").iterdir()) == ["r1_0002.flac"]
    assert stats["counts"]["sink.write"]["rejected"] == {"sink:no_audio": 2}
    assert stats["counts"]["sink.write"]["rejected_s"] == {"sink:no_audio": pytest.approx(2.0 + 0.75)}


def test_commit_marker_holds_the_units_counters(tmp_path):
    """The counters a unit collected on its way through the stages go into its marker as they came,
    with the sink's own beside them."""
    gate = {"rows_in": 5, "rows_out": 5, "rejected": {"license": 1}, "rejected_s": {"license": 3.0},
            "flagged": {"license": 1}}
    stats = sink.commit_unit(tmp_path, "u000002", make_table(unit_rows(), with_samples=True),
                             {"stage_s": {"license.gate": 0.1}, "counts": {"license.gate": gate}})
    marker = rundir.read_marker(tmp_path, "u000002")
    assert marker == json.loads(json.dumps(stats))
    assert list(marker["counts"]) == ["license.gate", "sink.write"] and marker["counts"]["license.gate"] == gate


# ============================================================================= durable commit

def test_marker_lists_every_file_with_size_and_sha256(committed):
    """``files`` names each file of the unit (relative to it) with the size and sha256 on disk: the
    same as ``file_records`` (helpers_rundir) computes from the disk."""
    run, _, stats = committed
    udir = rundir.unit_dir(run, "u000007")
    files = rundir.read_marker(run, "u000007")[rundir.FILES]
    on_disk = sorted(p.relative_to(udir).as_posix() for p in udir.rglob("*") if p.is_file() and p.name != "_COMMITTED")
    assert sorted(files) == on_disk == sorted(["kept.parquet", "rejected.parquet", *(f"audio/{i}.flac" for i in KEPT)])
    for rel, rec in files.items():
        data = (udir / rel).read_bytes()
        assert rec == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert file_records(udir) == files
    assert rundir.check_unit(run, "u000007") == (rundir.read_marker(run, "u000007"), None)


@pytest.mark.parametrize("damage, why", [
    (lambda u: (u / "kept.parquet").write_bytes((u / "kept.parquet").read_bytes()[:100]),
     r"^kept.parquet is 100 bytes, marker says \d+$"),
    (lambda u: (u / "audio" / "r2_0000.flac").write_bytes(b""), r"^audio/r2_0000.flac is 0 bytes, marker says \d+$"),
    (lambda u: (u / "rejected.parquet").unlink(), r"^rejected.parquet is missing, marker says \d+ bytes$"),
    (lambda u: (u / "_COMMITTED").write_text(json.dumps({"rows_in": 6})), r"^_COMMITTED lists no files$"),
    (lambda u: (u / "_COMMITTED").write_text('{"rows_in": '), r"^_COMMITTED is not readable JSON"),
])
def test_check_unit_finds_files_that_do_not_match_the_marker(committed, damage, why):
    run, _, _ = committed
    damage(rundir.unit_dir(run, "u000007"))
    marker, problem = rundir.check_unit(run, "u000007")
    assert marker is None and re.search(why, problem), problem


def test_check_unit_passes_a_same_size_change_and_ignores_an_uncommitted_unit(committed):
    """Resume checks sizes only: a byte changed in place is for ``granary verify RUN``."""
    run, _, _ = committed
    flac = rundir.unit_dir(run, "u000007") / "audio" / "r1_0000.flac"
    data = bytearray(flac.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flac.write_bytes(bytes(data))
    assert rundir.check_unit(run, "u000007")[1] is None
    (rundir.unit_dir(run, "u000007") / rundir.MARKER).unlink()
    assert rundir.check_unit(run, "u000007") == (None, None)


def many_rows(n: int) -> list[dict]:
    return [{"id": f"r{k:03d}", "recording_id": f"r{k:03d}", "offset_s": 0.0, "duration_s": 0.25,
             "recording_duration_s": 0.25, "samples": pcm(0.25, 200 + 10 * k), "lang": "en"} for k in range(n)]


def test_a_unit_with_more_files_than_the_writers_can_hold_commits_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(sink, "SYNC_THREADS", 2)  # at most 4 files waiting for the disk
    stats = sink.commit_unit(tmp_path, "u000000", make_table(many_rows(30), with_samples=True), {})
    udir = rundir.unit_dir(tmp_path, "u000000")
    assert len(stats[rundir.FILES]) == 32 and stats[rundir.FILES] == file_records(udir)
    for row in pq.read_table(udir / "kept.parquet").to_pylist():
        k = int(row["id"][1:])
        audio, _ = sf.read(tmp_path / row["audio_file"], dtype="float32")
        np.testing.assert_allclose(audio, np.frombuffer(pcm(0.25, 200 + 10 * k), np.float32), atol=2 / 32768)


def test_a_write_that_fails_among_many_stops_the_commit_naming_its_file(tmp_path, monkeypatch):
    real = rundir.write_file

    def full_at_r012(path, data, **kw):
        if Path(path).name == "r012.flac":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data, **kw)

    monkeypatch.setattr(sink, "SYNC_THREADS", 2)
    monkeypatch.setattr(sink, "write_file", full_at_r012)
    with pytest.raises(OSError, match="r012.flac") as info:
        sink.commit_unit(tmp_path, "u000000", make_table(many_rows(30), with_samples=True), {})
    assert info.value.errno == errno.ENOSPC
    assert list((tmp_path / "units").iterdir()) == []
