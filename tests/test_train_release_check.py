"""``granary train`` checks the shards of the release before it spends time: every shard training
reads is checked against ``release.json`` (exists, size, then sha256) first; the command exits 2
naming each missing or damaged shard, and ``--out`` is not created.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from granary_pipe.cli import main

try:
    from tests.test_train_fixtures import tiny_release  # noqa: F401 (fixture)
    from tests.test_train_loop import TINY_YAML
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from test_train_fixtures import tiny_release  # noqa: F401
    from test_train_loop import TINY_YAML


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--config", str(TINY_YAML), "--max-steps", "1", "-q",
            "--set", "train.threads=1", "--set", "data.loader_workers=0", "--set", "tokenizer.model_type=char",
            *extra]


@pytest.fixture()
def release(tiny_release, tmp_path) -> tuple[Path, dict]:
    """A private copy of the tiny release (the tests damage it) and its release.json."""
    rel = tmp_path / "release"
    shutil.copytree(tiny_release, rel)
    return rel, json.loads((rel / "release.json").read_text())


@pytest.fixture()
def pristine(tiny_release) -> Path:
    """The undamaged tiny release (read only)."""
    return tiny_release


def _shard(meta: dict, fmt: str, lang: str) -> str:
    return next(s["path"] for s in meta["shards"] if s["format"] == fmt and s["lang"] == lang)


def test_a_deleted_shard_is_named_before_anything_is_trained(release, tmp_path, capsys):
    rel, meta = release
    gone = _shard(meta, "wds", "en")
    (rel / gone).unlink()
    out = tmp_path / "model"
    assert main(_train(rel, out)) == 2
    err = capsys.readouterr().err
    assert f"{gone}: missing" in err, err
    assert "Traceback" not in err and len(err.splitlines()) <= 6, err
    assert not out.exists()  # nothing was trained: no tokenizer, no --out


def test_damaged_shards_are_named_by_size_and_by_checksum(release, pristine, tmp_path, capsys):
    rel, meta = release
    short, flipped = _shard(meta, "wds", "de"), _shard(meta, "wds", "en")
    with open(rel / short, "r+b") as fh:  # cut: the size tells
        fh.truncate(meta_bytes(meta, short) - 512)
    data = bytearray((rel / flipped).read_bytes())  # same size, one byte changed: the sha256 tells
    data[600] ^= 0xFF
    (rel / flipped).write_bytes(bytes(data))
    out = tmp_path / "model"
    assert main(_train(rel, out)) == 2
    err = capsys.readouterr().err
    assert f"{short}: size {meta_bytes(meta, short) - 512} != {meta_bytes(meta, short)} bytes" in err, err
    assert not out.exists()
    # the size problem is fixed: now the checksum names the other one
    shutil.copyfile(pristine / short, rel / short)
    assert main(_train(rel, out)) == 2
    err = capsys.readouterr().err
    assert f"{flipped}: sha256 mismatch" in err, err
    assert short not in err and not out.exists()


def test_a_damaged_parquet_shard_is_named_and_a_missing_one_is_not_needed(release, tmp_path, capsys):
    """The tokenizer reads the Parquet shards when all are there: a damaged one is refused; without
    them (a download of the WebDataset format only) training reads the texts from the tars."""
    rel, meta = release
    pq = _shard(meta, "parquet", "de")
    with open(rel / pq, "ab") as fh:
        fh.write(b"junk")
    assert main(_train(rel, tmp_path / "model")) == 2
    assert f"{pq}: size {meta_bytes(meta, pq) + 4} != {meta_bytes(meta, pq)} bytes" in capsys.readouterr().err
    shutil.rmtree(rel / "parquet")
    assert main(_train(rel, tmp_path / "model")) == 0
    assert "step 1" in capsys.readouterr().out


def test_only_the_languages_trained_on_are_checked(release, tmp_path, capsys):
    rel, meta = release
    (rel / _shard(meta, "wds", "de")).unlink()
    assert main(_train(rel, tmp_path / "model", "--set", "data.langs=[en]")) == 0
    assert "step 1" in capsys.readouterr().out


def meta_bytes(meta: dict, path: str) -> int:
    return next(s["bytes"] for s in meta["shards"] if s["path"] == path)
