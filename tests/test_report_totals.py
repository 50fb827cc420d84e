"""The report's merge of the units' digests: exact sums,
and the sink's digest being the one the unit's files give."""

from __future__ import annotations

import json
import math
import random

import pytest

from granary_pipe import digest, rundir
from granary_pipe.report.totals import ExactSum, collect

try:
    from tests.helpers_rundir import make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import make_run


def test_exact_sum_is_fsum_in_any_order():
    rng = random.Random(7)
    values = [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8) for _ in range(2000)] + [0.1] * 1000
    for order in range(3):
        rng.shuffle(values)
        s = ExactSum()
        for v in values:
            s.add(v)
        assert s.value() == math.fsum(values)
    s = ExactSum()
    for v in (1.0, math.inf, -math.inf):
        s.add(v)
    assert math.isnan(s.value())


def test_a_unit_without_digest_is_digested_from_its_files(tmp_path):
    run = make_run(tmp_path)
    with_digests = collect(run, {})
    for unit in rundir.committed_units(run):
        path = rundir.unit_dir(run, unit) / rundir.MARKER
        marker = json.loads(path.read_text())
        del marker[digest.KEY]
        path.write_text(json.dumps(marker))
    from_files = collect(run, {})
    assert list(with_digests.group_rows()) == list(from_files.group_rows())
    assert (with_digests.rows_in, with_digests.recordings, with_digests.examples) == \
        (from_files.rows_in, from_files.recordings, from_files.examples)
    assert with_digests.rows_in == 22 and with_digests.recordings == 9


def _edit_digest(run, unit, change) -> None:
    path = rundir.unit_dir(run, unit) / rundir.MARKER
    marker = json.loads(path.read_text())
    change(marker[digest.KEY])
    path.write_text(json.dumps(marker))


def test_a_digest_of_another_layout_is_recomputed_and_a_wrong_value_named(tmp_path):
    run = make_run(tmp_path)
    want = list(collect(run, {}).group_rows())
    _edit_digest(run, "u000000", lambda d: d["groups"][0].pop())  # a record one short: another layout
    _edit_digest(run, "u000001", lambda d: d.update(v=0))  # another version
    assert list(collect(run, {}).group_rows()) == want
    _edit_digest(run, "u000000", lambda d: d["scored"].append(["filter:x", "three", 1, 0.5]) or d.update(
        groups=digest.digest_of_unit(run, "u000000")["groups"]))
    with pytest.raises(ValueError, match=r"u000000/_COMMITTED: its 'digest' holds a value of the wrong type"):
        collect(run, {})
