"""Release as a job: the out-of-core plan (order, cuts, exclusions, broken units), the same bytes from
one worker and from Ray, and a killed release resumed shard by shard (no models)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from granary_pipe.io.release import build_release
from granary_pipe.io import release_gather
from granary_pipe.io.release_gather import gather, read_shard_rows, shard_sources
from granary_pipe.io.release_plan import plan_release
from granary_pipe.schema import SCHEMA

try:
    from tests.helpers_rundir import DEFAULT_UNITS, Row, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import DEFAULT_UNITS, Row, make_run

ROOT = Path(__file__).resolve().parents[1]
KEPT = [r for rows in DEFAULT_UNITS.values() for r in rows if r.drop_reason is None]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _plan(run: Path, tmp: Path, **kw):
    args = {"langs": None, "release_license": None, "seed": 0, "shard_rows": 1000, "shard_bytes": None, **kw}
    plan = plan_release(run, tmp, **args)
    rows = {s: t.column("id").to_pylist() for s, t in _gathered(plan, tmp).items()}
    return plan, rows


def _gathered(plan, root: Path) -> dict:
    """Every shard's rows, read as a shard task reads them after the gather tasks ran."""
    for job in plan.gather_jobs:
        gather(job)
    sources = shard_sources(plan.gather_jobs)
    return {s: read_shard_rows(root, s, sources[(s.lang, s.n)]) for s in plan.shards}


def _sha_order(ids: list[str], seed: int) -> list[str]:
    return sorted(ids, key=lambda i: (hashlib.sha256(f"{seed}\0{i}".encode()).digest(), i))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("seed", [0, 7, -3])
def test_plan_order_is_the_sha256_rule(run_dir, tmp_path, seed):
    plan, rows = _plan(run_dir, tmp_path, seed=seed)
    assert [(s.lang, s.n) for s in plan.shards] == [("de", 0), ("en", 0)]  # languages sorted
    for shard, ids in rows.items():
        expected = _sha_order([r.id for r in KEPT if r.lang == shard.lang], seed)
        assert ids == expected and shard.rows == len(expected)


def test_plan_rows_carry_the_row_schema_and_drop_nothing(run_dir, tmp_path):
    plan, _ = _plan(run_dir, tmp_path)
    table = _gathered(plan, tmp_path)[plan.shards[0]]
    assert "flags" in table.column_names and "drop_reason" in table.column_names
    assert table.column("drop_reason").null_count == table.num_rows
    assert table.schema.equals(SCHEMA)
    for f, i, u in zip(*(table.column(c).to_pylist() for c in ("audio_file", "id", "unit"))):
        assert f == f"units/{u}/audio/{i}.flac"


def test_plan_cuts_by_rows_and_by_flac_bytes(run_dir, tmp_path):
    plan, rows = _plan(run_dir, tmp_path / "a", shard_rows=3)
    assert [(s.lang, s.rows) for s in plan.shards] == [("de", 3), ("de", 3), ("en", 3), ("en", 3), ("en", 2)]
    assert [s.n for s in plan.shards] == [0, 1, 0, 1, 2]
    size = {r.id: (run_dir / "units" / u / "audio" / f"{r.id}.flac").stat().st_size
            for u, rs in DEFAULT_UNITS.items() for r in rs if r.drop_reason is None}
    limit = sorted(size.values())[len(size) // 2] * 2  # about two rows a shard
    plan, rows = _plan(run_dir, tmp_path / "b", shard_bytes=limit)
    for lang in ("de", "en"):
        order = _sha_order([r.id for r in KEPT if r.lang == lang], 0)
        expected, cur, cur_bytes = [], [], 0  # the cut rule: cut before a row would pass the limit
        for i in order:
            if cur and cur_bytes + size[i] > limit:
                expected.append(cur)
                cur, cur_bytes = [], 0
            cur.append(i)
            cur_bytes += size[i]
        expected.append(cur)
        assert [ids for s, ids in rows.items() if s.lang == lang] == expected
        assert len(expected) > 1


def test_plan_language_and_license_exclusions(run_dir, tmp_path):
    plan, rows = _plan(run_dir, tmp_path / "a", langs=["de"])
    assert {s.lang for s in plan.shards} == {"de"} and plan.excluded_by_lang == {"en": 8}
    units = {"u000000": [*DEFAULT_UNITS["u000000"], Row("rec30-s000", "rec30", "en", 0.5, license="CC-BY-SA-4.0"),
                         Row("rec31-s000", "rec31", "en", 0.5, license=None)]}
    run = make_run(tmp_path / "lic", units)
    plan, rows = _plan(run, tmp_path / "b", release_license="CC-BY-4.0")
    assert plan.excluded_by_license == {"CC-BY-SA-4.0": 1, "unknown": 1}
    released = {i for ids in rows.values() for i in ids}
    assert "rec30-s000" not in released and "rec31-s000" not in released and "rec01-s000" in released  # CC0 in
    with pytest.raises(ValueError, match="fr"):
        _plan(run_dir, tmp_path / "c", langs=["fr"])


def _rewrite_kept(run: Path, unit: str, change) -> None:
    path = run / "units" / unit / "kept.parquet"
    pq.write_table(change(pq.read_table(path)), path)


def _set(table: pa.Table, name: str, index: int, value) -> pa.Table:
    values = table.column(name).to_pylist()
    values[index] = value
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def test_duplicate_ids_are_an_error_naming_the_files(tmp_path):
    run = make_run(tmp_path)
    _rewrite_kept(run, "u000001", lambda t: _set(t, "id", 0, "rec00-s000"))
    with pytest.raises(ValueError, match=r"duplicate row ids.*rec00-s000.*u000000/kept.parquet.*u000001"):
        build_release(run, tmp_path / "rel", progress=False)
    assert not (tmp_path / "rel").exists()  # nothing left behind


def test_missing_audio_file_and_drop_reason_are_errors(tmp_path):
    run = make_run(tmp_path)
    _rewrite_kept(run, "u000001", lambda t: _set(t, "audio_file", 1, None))
    with pytest.raises(ValueError, match=r"kept rows without audio_file: \['rec10-s001'\].*u000001"):
        build_release(run, tmp_path / "rel", progress=False)
    _rewrite_kept(run, "u000000", lambda t: _set(t, "drop_reason", 0, "filter:x"))
    with pytest.raises(ValueError, match=r"drop_reason set.*u000000/kept.parquet \(1\)"):
        build_release(run, tmp_path / "rel", progress=False)


def test_missing_flac_with_a_byte_target_names_the_file(tmp_path):
    run = make_run(tmp_path)
    victim = run / "units" / "u000000" / "audio" / "rec00-s001.flac"
    victim.unlink()
    with pytest.raises(FileNotFoundError, match="rec00-s001.flac"):
        build_release(run, tmp_path / "rel", shard_bytes=10_000, progress=False)


def test_ray_workers_write_the_same_bytes_as_one_process(run_dir, tmp_path):
    one = build_release(run_dir, tmp_path / "one", shard_rows=3, formats="all", progress=False)
    two = build_release(run_dir, tmp_path / "two", shard_rows=3, formats="all", progress=False, workers=2)
    assert one == two
    tree = _tree(tmp_path / "one")
    assert tree == _tree(tmp_path / "two")
    assert {p.split("/")[0] for p in tree} == {"parquet", "wds", "nemo", "lhotse_shar", "release.json",
                                              "ATTRIBUTION.md", "README.md"}
    assert len(one["shards"]) == 5 * 6  # 5 shards: one file each in parquet and wds, two in nemo and lhotse_shar


def test_gather_jobs_of_any_size_give_the_same_bytes(tmp_path, monkeypatch):
    """Rows gathered in many small jobs (each a few unit files, a shard's rows spread over several gather
    files) make the same release as one job holding every row."""
    run = _many_rows_run(tmp_path)
    one = build_release(run, tmp_path / "one", shard_rows=5, formats="all", progress=False)
    monkeypatch.setattr(release_gather, "GATHER_ROWS", 13)  # 12 rows a unit: a job ends at a file's end
    plan = plan_release(run, tmp_path / "w", langs=None, release_license=None, seed=0, shard_rows=5,
                        shard_bytes=None)
    assert len(plan.gather_jobs) == 2
    spread = shard_sources(plan.gather_jobs) if all(gather(j) for j in plan.gather_jobs) else {}
    assert max(len(v) for v in spread.values()) == 2  # some shard reads a row group from each gather file
    many = build_release(run, tmp_path / "many", shard_rows=5, formats="all", progress=False)
    assert one == many and _tree(tmp_path / "one") == _tree(tmp_path / "many")


def test_a_rerun_keeps_the_gather_jobs_done_before(tmp_path, monkeypatch):
    """A release that died after gather job 0 leaves its work; the rerun runs job 1 only."""
    from granary_pipe.io import release as release_mod

    run = _many_rows_run(tmp_path)
    monkeypatch.setattr(release_gather, "GATHER_ROWS", 13)
    out = tmp_path / "rel"

    def dies_at_job_1(job):
        if job.g == 1:
            raise OSError("disk gone")
        return gather(job)

    monkeypatch.setattr(release_mod, "gather", dies_at_job_1)
    with pytest.raises(OSError, match="disk gone"):
        build_release(run, out, shard_rows=5, progress=False)
    (done,) = out.glob(".tmp-release-*/gather/000000.json")
    ran: list[int] = []
    monkeypatch.setattr(release_mod, "gather", lambda job: ran.append(job.g) or gather(job))
    build_release(run, out, shard_rows=5, progress=False)
    assert ran == [1]
    build_release(run, tmp_path / "whole", shard_rows=5, progress=False)
    assert _tree(out) == _tree(tmp_path / "whole")


def test_rerun_with_other_arguments_starts_over(run_dir, tmp_path):
    out = tmp_path / "rel"
    stale = out / ".tmp-release-0123456789abcdef"
    (stale / "done" / "en").mkdir(parents=True)
    (stale / "done" / "en" / "000000.json").write_text("{}")
    build_release(run_dir, out, shard_rows=3, progress=False)
    assert not stale.exists() and not list(out.glob(".tmp-release-*"))


def _many_rows_run(tmp_path: Path) -> Path:
    units = {f"u{k:06d}": [Row(f"r{k}x{j}-s000", f"r{k}x{j}", "en" if j % 3 else "de", 0.3) for j in range(12)]
             for k in range(4)}
    return make_run(tmp_path, units, uncommitted={}, failed={})


def test_killed_release_resumes_shard_by_shard(tmp_path):
    run = _many_rows_run(tmp_path)  # 48 rows, one a shard: 48 shards in 4 formats
    out = tmp_path / "rel"
    cmd = [sys.executable, "-m", "granary_pipe.cli", "release", str(run), "--out", str(out), "--shard-rows", "1",
           "--formats", "all", "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        done = list(out.glob(".tmp-release-*/done/*/*.json"))
        if len(done) >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / "release.json").exists()
    (work,) = out.glob(".tmp-release-*")
    records = [json.loads(p.read_text()) for p in work.glob("done/*/*.json")]
    assert 5 <= len(records) < 48
    before = {e["path"]: (work / e["path"]).stat() for r in records for e in r["entries"]}

    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    for path, st in before.items():  # finished before the kill: moved into place, not written again
        now = (out / path).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), path
    assert not list(out.glob(".tmp-release-*"))
    build_release(run, tmp_path / "whole", shard_rows=1, formats="all", progress=False)
    assert _tree(out) == _tree(tmp_path / "whole")


def test_unreachable_cluster_is_refused_before_anything_is_written(run_dir, tmp_path):
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        build_release(run_dir, tmp_path / "rel", ray_address="127.0.0.1:9", progress=False)
    assert not (tmp_path / "rel").exists()


def test_cli_help_names_workers_and_ray_address():
    out = subprocess.run([sys.executable, "-m", "granary_pipe.cli", "release", "--help"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True).stdout
    assert "--workers N" in out and "--ray-address ADDRESS" in out and "embedded local Ray" in out


def test_units_written_without_a_column_read_it_as_null(tmp_path):
    """Units of different versions: the first file lacks a column the others have (it must not be lost)."""
    run = make_run(tmp_path)
    _rewrite_kept(run, "u000000", lambda t: t.drop_columns(["translation", "speaker"]))
    plan, _ = _plan(run, tmp_path / "p")
    rows = [r for t in _gathered(plan, tmp_path / "p").values() for r in t.to_pylist()]
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == len(KEPT)
    assert by_id["rec11-s000"]["translation"] == "a translated sentence"  # u000001 keeps its values
    assert by_id["rec00-s000"]["translation"] is None and by_id["rec00-s000"]["speaker"] is None


def test_a_second_release_with_the_same_arguments_is_refused_while_one_writes(run_dir, tmp_path):
    from granary_pipe.io import run_lock
    from granary_pipe.io.release import work_dir_name
    from granary_pipe.io.release_out import LOCK_NAME
    from granary_pipe.rundir import read_run_json

    out = tmp_path / "rel"
    args = {"formats": ["parquet", "wds"], "shard_rows": 1000, "shard_bytes": None, "seed": 0, "langs": None,
            "release_license": "CC-BY-4.0"}
    work = out / work_dir_name(run_dir, read_run_json(run_dir), args)
    work.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_lock.RunLocked, match="another granary release is writing it"):
            build_release(run_dir, out, progress=False)
        assert work.is_dir()  # the other release's work is left alone
    finally:
        holder.kill()
        holder.wait()
    build_release(run_dir, out, progress=False)  # once it is gone, the same command goes ahead
    assert (out / "release.json").is_file() and not work.exists() and not (out / LOCK_NAME).exists()


def test_release_json_entries_keep_the_writers_key_order(run_dir, tmp_path):
    """A shard's entries travel through its done-record on disk: release.json must list each one's keys in the
    order ``file_entry`` made them (path, format, lang, sha256, bytes, rows, hours, shard), as one process did."""
    from granary_pipe.io.release_meta import file_entry

    build_release(run_dir, tmp_path / "rel", progress=False, formats="all")
    release = json.loads((tmp_path / "rel" / "release.json").read_text())
    first = release["shards"][0]
    want = [*file_entry(tmp_path / "rel", first["path"], first["format"], first["lang"], 0, 0.0), "shard"]
    assert all(list(entry) == want for entry in release["shards"])
