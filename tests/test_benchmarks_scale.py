"""The run replicator of ``benchmarks/post_run_scale.py`` (``benchmarks/replicate_run.py``): a
replicated run has unique row ids, valid markers (their figures, ``files`` entries and digests
match what is on disk) and a report that balances. No timing."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from granary_pipe import digest, rundir
from granary_pipe.report.summary import summarize

try:
    from tests.helpers_rundir import DEFAULT_UNITS, make_run
except ImportError:  # pragma: no cover - run from inside tests/
    from helpers_rundir import DEFAULT_UNITS, make_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from replicate_run import replicate  # noqa: E402


def _source(tmp_path: Path) -> Path:
    """A run of one committed unit (the test suite's u000000), its marker with counts, the sizes and
    sha256 of its files and its digest, as the sink writes them."""
    return make_run(tmp_path, {"u000000": DEFAULT_UNITS["u000000"]}, uncommitted={}, failed={}, counts=True)


def _rows(run: Path, unit: str, which: str) -> list[dict]:
    return pq.read_table(rundir.unit_dir(run, unit) / f"{which}.parquet").to_pylist()


@pytest.mark.parametrize("rows_per_unit,variants", [(None, 1), (25, 1), (None, 2)])
def test_replicated_run_is_valid(tmp_path, rows_per_unit, variants):
    source = _source(tmp_path)
    out = tmp_path / "replicated"
    info = replicate(source, out, 2, rows_per_unit=rows_per_unit, variants=variants, jobs=1)

    units = rundir.committed_units(out)
    assert units == ["u000000", "u000001"]
    src_kept, src_rej = _rows(source, "u000000", "kept"), _rows(source, "u000000", "rejected")
    ids, recordings = [], set()
    for unit in units:
        kept, rejected = _rows(out, unit, "kept"), _rows(out, unit, "rejected")
        if rows_per_unit is None:
            assert (len(kept), len(rejected)) == (len(src_kept), len(src_rej))
        else:
            assert len(kept) + len(rejected) == rows_per_unit
        assert {r["unit"] for r in kept + rejected} == {unit}
        ids += [r["id"] for r in kept + rejected]
        recordings |= {r["recording_id"] for r in kept + rejected}
        marker = rundir.read_marker(out, unit)
        assert marker["unit"] == unit
        assert (marker["rows_in"], marker["rows_kept"], marker["rows_rejected"]) == \
            (len(kept) + len(rejected), len(kept), len(rejected))
        assert marker["recordings"] == len({r["recording_id"] for r in kept + rejected})
        udir = rundir.unit_dir(out, unit)
        for r in kept:  # its audio is the source row's: hard-linked, or a variant (its samples, a few cut)
            audio = out / r["audio_file"]
            assert audio.name == f"{r['id']}.flac" and audio.parent == udir / "audio"
            src = source / "units/u000000/audio" / f"{r['id'].split('~')[0]}.flac"
            if variants == 1:
                assert audio.stat().st_ino == src.stat().st_ino
            else:
                got, want = sf.read(audio, dtype="int16")[0], sf.read(src, dtype="int16")[0]
                cut = 7 * int(unit[-1])  # copy k of the one source unit is unit k: variant k
                assert np.array_equal(got, want[cut:])
                assert r["duration_s"] == pytest.approx(len(got) / sf.info(audio).samplerate)
        on_disk = {str(p.relative_to(udir)) for p in udir.rglob("*") if p.is_file() and p.name != rundir.MARKER}
        assert set(marker["files"]) == on_disk
        for rel, entry in marker["files"].items():
            data = (udir / rel).read_bytes()
            assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert marker[digest.KEY] == digest.digest_of_unit(out, unit)  # the copy's own figures and example ids
    assert len(ids) == len(set(ids)), "row ids repeat across or within units"
    assert not set(ids) & {r["id"] for r in src_kept + src_rej}

    summary = summarize(out)
    assert summary["rows"]["balanced"] and summary["rows"]["in"] == len(ids)
    assert summary["recordings"]["balanced"] and summary["recordings"]["in"] == len(recordings)
    assert summary["units"]["committed"] == 2 and summary["units"]["failed"] == 0
    assert info["units_total"] == info["units_committed"] == 2
    assert info["totals"]["rows_in"] == len(ids)
