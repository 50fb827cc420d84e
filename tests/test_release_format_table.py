"""The release format table (:mod:`granary_pipe.io.formats`) is the one list of formats: what is
written matches its naming, and the CLI and the dataset card read it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from granary_pipe.cli import build_parser, main
from granary_pipe.io.formats import DEFAULT_FORMATS, FORMATS, RELEASE_FORMATS, resolve_formats
from granary_pipe.io.release import build_release

try:
    from tests.helpers_rundir import make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import make_run


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A run, and its release in every format (3 rows a shard) with release.json's dict."""
    run = make_run(tmp_path_factory.mktemp("runs"))
    out = tmp_path_factory.mktemp("rel") / "release"
    return run, out, build_release(run, out, shard_rows=3, progress=False, formats="all")


def _naming_re(pattern: str) -> re.Pattern:
    """``wds/{lang}/{lang}-%06d.tar`` -> a regex: one language throughout, a six-digit shard number."""
    lang = re.escape("{lang}")
    body = re.escape(pattern).replace(lang, "(?P<lang>[a-z]+)", 1).replace(lang, "(?P=lang)")
    return re.compile(body.replace("%06d", r"(?P<n>\d{6})"))


def test_every_file_written_is_named_as_its_format_says(made):
    _, rel, meta = made
    assert meta["formats"] == list(FORMATS) == ["parquet", "wds", "nemo", "lhotse_shar"]
    for s in meta["shards"]:
        fmt = RELEASE_FORMATS[s["format"]]
        assert s["path"].split("/")[0] == fmt.name  # one name: the format is its directory
        patterns = [_naming_re(f"{fmt.name}/{{lang}}/{f}") for f in fmt.files]
        match = next((m for p in patterns if (m := p.fullmatch(s["path"]))), None)
        assert match, (s["path"], fmt.naming())
        assert (match["lang"], int(match["n"])) == (s["lang"], s["shard"])
    assert meta["sharding"]["naming"] == {name: f.naming() for name, f in RELEASE_FORMATS.items()}
    on_disk = sorted(p.name for p in rel.iterdir() if p.is_dir())
    assert on_disk == sorted(FORMATS)


def test_the_dataset_card_and_the_cli_read_the_table(made):
    _, rel, _ = made
    card = (rel / "README.md").read_text()
    for fmt in RELEASE_FORMATS.values():
        assert f"- `{fmt.name}/`: {fmt.readers}" in card
    parser = build_parser()
    assert parser.parse_args(["release", "r", "--out", "o"]).formats == list(DEFAULT_FORMATS) == ["parquet", "wds"]
    with pytest.raises(SystemExit):
        parser.parse_args(["release", "r", "--out", "o", "--formats", "tfrecord"])
    with pytest.raises(ValueError, match=r"unknown release format\(s\) \['tfrecord'\].*lhotse_shar"):
        resolve_formats(["tfrecord"])


def test_cli_option_parsing_does_not_load_the_writers():
    code = ("import sys; from granary_pipe.cli import build_parser; "
            "a = build_parser().parse_args(['release', 'r', '--out', 'o', '--formats', 'all']); "
            "print(sorted(m for m in ('pyarrow', 'soundfile') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_release_license_option(made, tmp_path, capsys):
    run_dir = made[0]
    assert main(["release", str(run_dir), "--out", str(tmp_path / "a"), "--release-license", "CC-BY-SA-4.0",
                 "-q", "--json"]) == 0
    new = capsys.readouterr()
    made = json.loads(new.out)
    assert made["release_license"] == "CC-BY-SA-4.0" and new.err == ""
    assert made["languages"] == ["de", "en"]
    with pytest.raises(SystemExit) as stop:  # --release-license is the one name (as in `granary licenses audit`)
        main(["release", str(run_dir), "--out", str(tmp_path / "b"), "--license", "CC-BY-SA-4.0", "-q"])
    assert stop.value.code == 2 and not (tmp_path / "b").exists()
