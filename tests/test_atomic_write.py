"""One home for atomic file writes (``rundir.atomic_path``): whole or not at all, no debris."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from granary_pipe.rundir import atomic_path, write_bytes_atomic, write_json_atomic


def test_bytes_and_json_replace_the_old_file_whole(tmp_path):
    path = tmp_path / "f.json"
    write_bytes_atomic(path, b"old\n")
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, durable):
    path = tmp_path / "table.parquet"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path, durable=durable) as tmp:
            pq.write_table(pa.table({"x": [1]}), tmp)
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def test_an_unserialisable_value_writes_nothing(tmp_path):
    class Loop(dict):
        pass

    value = Loop()
    value["self"] = value
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", value)
    assert list(tmp_path.iterdir()) == []
