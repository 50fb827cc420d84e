"""Durable commits on real runs: a resumed run redoes a committed unit whose
files do not have the sizes its marker lists (one warning line saying which and why), and
``granary verify RUN`` finds what sizes cannot (a byte flipped in place) by sha256.

First the order of the sink's ``fsync`` and ``os.replace`` calls (the real calls, recorded). Then
real runs: decode + license gate on four demo clips (one per unit; the non-commercial clip is
rejected by the gate, so one unit keeps nothing), on the Beam executor in this process (no Ray to
start).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fault_helpers import write_pipeline, write_source
from helpers_rundir import file_records
from granary_pipe import rundir
from granary_pipe.cli import main
from granary_pipe.executors import beam as beam_executor
from granary_pipe.io import sink
from granary_pipe.pipeline import run_pipeline
from granary_pipe.schema import SAMPLE_RATE_HZ, make_table


# ============================================================================= the order of the calls

def small_unit():
    """3 kept rows with audio and 2 rejected: 5 files once committed."""
    def tone(k: int) -> bytes:
        t = np.arange(SAMPLE_RATE_HZ // 2) / SAMPLE_RATE_HZ
        return (0.3 * np.sin(2 * np.pi * (200 + 50 * k) * t)).astype(np.float32).tobytes()

    rows = [{"id": f"r{k}", "recording_id": f"r{k}", "offset_s": 0.0, "duration_s": 0.5, "samples": tone(k),
             "drop_reason": "filter:empty_text" if k >= 3 else None} for k in range(5)]
    return make_table(rows, with_samples=True)


class Calls:
    """Records ``os.fsync`` (the path behind the descriptor) and ``os.replace`` calls, in order."""

    def __init__(self, monkeypatch) -> None:
        self.events: list[tuple] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src, dst, **kw):
            self.events.append(("replace", str(src), str(dst)))
            real_replace(src, dst, **kw)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def fsynced(self, path) -> int:
        """Index of the (only) fsync of ``path``."""
        hits = [i for i, e in enumerate(self.events) if e == ("fsync", str(path))]
        assert len(hits) == 1, (path, self.events)
        return hits[0]


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")


@needs_proc
def test_commit_fsyncs_files_and_directories_before_each_rename(tmp_path, monkeypatch):
    run = tmp_path.resolve()
    calls = Calls(monkeypatch)
    sink.commit_unit(run, "u000000", small_unit(), {})
    monkeypatch.undo()
    final = rundir.unit_dir(run, "u000000")
    renames = [(i, e) for i, e in enumerate(calls.events) if e[0] == "replace"]
    assert len(renames) == 2, renames
    (i_dir, (_, tmp_dir, dst)), (i_marker, (_, marker_tmp, marker)) = renames
    assert dst == str(final) and Path(tmp_dir).name.startswith(".u000000.tmp-")
    assert marker == str(final / rundir.MARKER) and Path(marker_tmp).parent == final
    files = rundir.read_marker(run, "u000000")[rundir.FILES]
    assert len(files) == 5
    file_syncs = [calls.fsynced(Path(tmp_dir) / rel) for rel in files]
    assert max(file_syncs) < i_dir  # every file on disk before the unit gets its name
    flac_syncs = [calls.fsynced(Path(tmp_dir) / rel) for rel in files if rel.startswith("audio/")]
    assert max(flac_syncs) < calls.fsynced(Path(tmp_dir) / "audio") < i_dir  # audio/'s entries
    assert max(file_syncs) < calls.fsynced(Path(tmp_dir)) < i_dir  # the unit directory's entries
    assert i_dir < calls.fsynced(run / "units") < i_marker  # the rename itself, before the marker
    assert i_dir < calls.fsynced(marker_tmp) < i_marker  # the marker's bytes before its name
    assert calls.fsynced(final) > i_marker  # the marker's name
    assert calls.events[-1] == ("fsync", str(final))
    assert len(calls.events) == 5 + 3 + 2 + 2  # files, 3 directories before the marker, marker + final dir


@needs_proc
def test_write_json_atomic_fsyncs_the_file_then_the_directory(tmp_path, monkeypatch):
    path = tmp_path.resolve() / "run.json"
    calls = Calls(monkeypatch)
    rundir.write_json_atomic(path, {"a": 1})
    assert [e[0] for e in calls.events] == ["fsync", "replace", "fsync"]
    assert calls.events[0][1] == calls.events[1][1] and calls.events[1][2] == str(path)
    assert calls.events[2] == ("fsync", str(path.parent))
    calls.events.clear()
    rundir.write_json_atomic(path, {"a": 2}, durable=False)  # scratch files: no fsync
    assert [e[0] for e in calls.events] == ["replace"]
    assert json.loads(path.read_text()) == {"a": 2}


@needs_proc
def test_a_failed_fsync_leaves_no_unit_and_names_the_file(tmp_path, monkeypatch):
    """fsync is where a full or failing disk may first say so (EIO, ENOSPC on some filesystems):
    the commit fails naming the file, and no unit (nor temporary) is left."""
    real = os.fsync

    def failing(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("kept.parquet"):
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="kept.parquet") as info:
        sink.commit_unit(tmp_path, "u000000", small_unit(), {})
    assert info.value.errno == errno.EIO
    assert list((tmp_path / "units").iterdir()) == []


# ============================================================================= real runs

CLIPS = ["de_01.flac", "en_01.flac", "en_nc_01.flac", "it_01.flac"]
STAGES = [{"use": "audio.decode"}, {"use": "license.gate"}]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("durable")
    return write_pipeline(d / "pipeline.yaml", STAGES, per_unit=1), write_source(d / "src", CLIPS)


def run(inputs: tuple[Path, Path], out: Path) -> dict:
    return run_pipeline(*inputs, out, executor="beam", progress=False)


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory) -> Path:
    """One uninterrupted run; tests damage copies of it."""
    out = tmp_path_factory.mktemp("clean") / "run"
    info = run(inputs, out)
    assert info["status"] == "complete" and info["units_total"] == len(CLIPS)
    return out


@pytest.fixture
def copy(clean, tmp_path) -> Path:
    shutil.copytree(clean, tmp_path / "run")
    return tmp_path / "run"


def unit_with_audio(run: Path) -> str:
    return next(u for u in rundir.committed_units(run) if rundir.read_marker(run, u)["rows_kept"])


def a_flac(run: Path, unit: str) -> str:
    return next(rel for rel in rundir.read_marker(run, unit)[rundir.FILES] if rel.startswith("audio/"))


def mtimes(run: Path) -> dict[str, int]:
    return {u: (rundir.unit_dir(run, u) / rundir.MARKER).stat().st_mtime_ns for u in rundir.committed_units(run)}


def unit_bytes(run: Path, unit: str) -> dict[str, bytes]:
    udir = rundir.unit_dir(run, unit)
    return {p.relative_to(udir).as_posix(): p.read_bytes() for p in udir.rglob("*")
            if p.is_file() and p.name != rundir.MARKER}


def verify(run: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["verify", str(run), "-q", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_run_records_every_file_and_a_clean_run_verifies(clean, capsys):
    units = rundir.committed_units(clean)
    assert len(units) == len(CLIPS)
    n_files = 0
    for u in units:
        files = rundir.read_marker(clean, u)[rundir.FILES]
        assert files == file_records(rundir.unit_dir(clean, u))  # sizes and sha256 of the disk
        kept = pq.read_table(rundir.unit_dir(clean, u) / "kept.parquet").column("audio_file").to_pylist()
        assert sorted(files) == sorted(["kept.parquet", "rejected.parquet",
                                        *(f.removeprefix(f"units/{u}/") for f in kept)])
        n_files += len(files)
    assert n_files > 2 * len(CLIPS)  # FLACs too
    code, out, err = verify(clean, capsys=capsys)
    assert (code, err) == (0, "")
    assert f"verify {clean}: ok: {len(CLIPS)} units, {n_files} files ok, 0 missing, 0 bad" in out
    code, out, _ = verify(clean, "--json", "--jobs", "1", capsys=capsys)
    assert code == 0 and json.loads(out) == {"passed": True, "run": str(clean), "units": len(CLIPS),
                                             "files_ok": n_files, "missing": [], "bad": {}}


def truncate_parquet(udir: Path) -> str:
    path = udir / "kept.parquet"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    return f"kept.parquet is {size // 2} bytes, marker says {size}"


def empty_flac(udir: Path) -> str:  # what a power loss without fsync leaves: the name, no data
    rel = a_flac(udir.parent.parent, udir.name)
    size = (udir / rel).stat().st_size
    (udir / rel).write_bytes(b"")
    return f"{rel} is 0 bytes, marker says {size}"


def remove_flac(udir: Path) -> str:
    rel = a_flac(udir.parent.parent, udir.name)
    size = (udir / rel).stat().st_size
    (udir / rel).unlink()
    return f"{rel} is missing, marker says {size} bytes"


def marker_without_files(udir: Path) -> str:
    marker = json.loads((udir / rundir.MARKER).read_text())
    del marker[rundir.FILES]
    (udir / rundir.MARKER).write_text(json.dumps(marker))
    return "_COMMITTED lists no files"


@pytest.mark.parametrize("damage", [truncate_parquet, empty_flac, remove_flac, marker_without_files])
def test_resume_redoes_a_committed_unit_whose_files_do_not_match(inputs, clean, copy, damage, caplog):
    unit = unit_with_audio(copy)
    why = damage(rundir.unit_dir(copy, unit))
    before = mtimes(copy)
    with caplog.at_level(logging.WARNING, logger="granary_pipe.pipeline"):
        info = run(inputs, copy)
    assert info["status"] == "complete" and info["units_committed"] == len(CLIPS)
    lines = [r.getMessage() for r in caplog.records if r.name == "granary_pipe.pipeline"]
    assert lines == [f"{unit}: {why}: redoing the unit"]
    after = mtimes(copy)
    assert after.pop(unit) != before.pop(unit) and after == before  # that unit only was redone
    assert unit_bytes(copy, unit) == unit_bytes(clean, unit)  # and it is what the clean run wrote
    assert rundir.check_unit(copy, unit)[0][rundir.FILES] == rundir.read_marker(clean, unit)[rundir.FILES]
    assert info["totals"] == json.loads((clean / "run.json").read_text())["totals"]


def test_a_flipped_byte_passes_resume_and_is_caught_by_verify(inputs, copy, capsys, caplog):
    unit = unit_with_audio(copy)
    rel = a_flac(copy, unit)
    flac = rundir.unit_dir(copy, unit) / rel
    data = bytearray(flac.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size
    flac.write_bytes(bytes(data))
    before = mtimes(copy)
    with caplog.at_level(logging.WARNING, logger="granary_pipe.pipeline"):
        assert run(inputs, copy)["status"] == "complete"
    assert mtimes(copy) == before and not [r for r in caplog.records if r.name == "granary_pipe.pipeline"]

    other = next(u for u in rundir.committed_units(copy) if u != unit)
    (rundir.unit_dir(copy, other) / "rejected.parquet").unlink()  # and one missing file elsewhere
    for jobs in ("1", "3"):
        code, out, err = verify(copy, "--jobs", jobs, capsys=capsys)
        assert code == 1
        assert err.splitlines() == [f"missing: units/{other}/rejected.parquet",
                                    f"bad: units/{unit}/{rel}: sha256 mismatch"]
        assert f"verify {copy}: FAILED:" in out and "1 missing, 1 bad" in out
    code, out, _ = verify(copy, "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 1 and not report["passed"]
    assert report["bad"] == {f"units/{unit}/{rel}": "sha256 mismatch"}
    assert report["missing"] == [f"units/{other}/rejected.parquet"]


def test_verify_of_a_run_names_a_marker_without_files_and_refuses_release_options(copy, capsys):
    unit = unit_with_audio(copy)
    marker_without_files(rundir.unit_dir(copy, unit))
    code, _, err = verify(copy, capsys=capsys)
    assert code == 1 and err.startswith(f"bad: units/{unit}/_COMMITTED: lists no files")
    code, _, err = verify(copy, "--lang", "en", capsys=capsys)
    assert code == 2 and "is a run directory: --lang/--formats select release files" in err
    code, _, err = verify(copy.parent / "nothing", capsys=capsys)
    assert code == 2 and "release.json does not exist" in err


def test_the_beam_executor_trusts_a_unit_without_a_result_only_when_its_files_match(copy, caplog):
    """After the Beam pipeline, a unit with no result file is taken from its marker, with the same
    size check as a resume; a damaged one is reported failed and removed (the next run redoes it)."""
    units = rundir.committed_units(copy)
    assert beam_executor._from_marker(copy, units[0], None) == (rundir.read_marker(copy, units[0]), None)
    why = truncate_parquet(rundir.unit_dir(copy, units[1]))
    with caplog.at_level(logging.WARNING, logger="granary_pipe.executors.beam"):
        assert beam_executor._from_marker(copy, units[1], None) == (None, f"commit: {why}")
    assert f"{units[1]}: {why}: the unit is not committed" in caplog.text
    assert not rundir.unit_dir(copy, units[1]).exists()
    assert beam_executor._from_marker(copy, units[1], "boom") == (None, "boom")
    assert beam_executor._from_marker(copy, "u999999", None) == (None, "beam pipeline produced no result for "
                                                                       "this unit")
