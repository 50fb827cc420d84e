"""The release format table (:mod:`granary_pipe.io.formats`) is the one list of formats: what is
written matches its naming, the CLI and the dataset card read it, and the former names (format
``lhotse``, ``granary release --license``) still work for one release with a deprecation warning,
also on releases whose release.json predates the rename."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from granary_pipe.cli import build_parser, main
from granary_pipe.io.download import download_release
from granary_pipe.io.formats import DEFAULT_FORMATS, FORMATS, RELEASE_FORMATS, resolve_formats, resolve_writer
from granary_pipe.io.release import build_release
from granary_pipe.io.verify import verify_release

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
    with pytest.raises(ValueError, match=r"unknown release format 'tfrecord'.*lhotse_shar"):
        resolve_writer("tfrecord")


def test_cli_option_parsing_does_not_load_the_writers():
    code = ("import sys; from granary_pipe.cli import build_parser; "
            "a = build_parser().parse_args(['release', 'r', '--out', 'o', '--formats', 'all']); "
            "print(sorted(m for m in ('pyarrow', 'soundfile') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_former_format_name_warns_and_writes_the_current_one(made, tmp_path, capsys):
    run_dir = made[0]
    with pytest.warns(FutureWarning, match="'lhotse' is now called 'lhotse_shar'"):
        assert resolve_formats(["lhotse", "wds"]) == ("wds", "lhotse_shar")
    with pytest.warns(FutureWarning, match="lhotse_shar"):
        meta = build_release(run_dir, tmp_path / "api", progress=False, formats="lhotse")
    assert meta["formats"] == ["lhotse_shar"] and (tmp_path / "api" / "lhotse_shar").is_dir()

    assert main(["release", str(run_dir), "--out", str(tmp_path / "cli"), "--formats", "parquet,lhotse",
                 "-q", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["bytes"].keys() == {"parquet", "lhotse_shar"}
    assert out.err.strip() == ("granary: warning: release format 'lhotse' is now called 'lhotse_shar'; "
                               "the old name will be removed in the next release")


def test_release_license_option_and_its_former_name(made, tmp_path, capsys):
    run_dir = made[0]
    assert main(["release", str(run_dir), "--out", str(tmp_path / "a"), "--release-license", "CC-BY-SA-4.0",
                 "-q", "--json"]) == 0
    new = capsys.readouterr()
    made = json.loads(new.out)
    assert made["release_license"] == "CC-BY-SA-4.0" and new.err == ""
    assert made["languages"] == ["de", "en"]
    assert main(["release", str(run_dir), "--out", str(tmp_path / "b"), "--license", "CC-BY-SA-4.0",
                 "-q", "--json"]) == 0
    old = capsys.readouterr()
    assert json.loads(old.out) == {**made, "release": str(tmp_path / "b")}
    assert old.err.startswith("granary: warning: granary release --license is now --release-license")
    assert (tmp_path / "a" / "release.json").read_bytes() == (tmp_path / "b" / "release.json").read_bytes()
    assert main(["release", str(run_dir), "--out", str(tmp_path / "c"), "--license", "CC-BY-4.0",
                 "--release-license", "CC-BY-SA-4.0", "-q"]) == 2
    assert "disagree" in capsys.readouterr().err and not (tmp_path / "c").exists()


@pytest.fixture()
def old_release(made, tmp_path) -> Path:
    """A copy of the release whose release.json is as format_version 2 wrote it (format ``lhotse``)."""
    _, rel, _ = made
    old = tmp_path / "old"
    shutil.copytree(rel, old)
    meta = json.loads((old / "release.json").read_text())
    meta["format_version"] = 2
    meta["formats"] = ["lhotse" if f == "lhotse_shar" else f for f in meta["formats"]]
    for s in meta["shards"]:
        s["format"] = "lhotse" if s["format"] == "lhotse_shar" else s["format"]
    (old / "release.json").write_text(json.dumps(meta, indent=2))
    return old


@pytest.mark.parametrize("asked", ["lhotse_shar", "lhotse"])
def test_download_and_verify_of_an_older_release_by_either_name(old_release, asked, tmp_path, capsys):
    shar = sorted(p.relative_to(old_release).as_posix() for p in (old_release / "lhotse_shar").rglob("*.*"))
    assert len(shar) == 10  # 2 files x (3 en + 2 de shards)
    report = download_release(str(old_release), tmp_path / "dl", langs=None, formats=["lhotse_shar"], progress=False)
    assert sorted(report.fetched) == sorted(shar + ["ATTRIBUTION.md", "README.md"]) and report.passed
    assert main(["verify", str(tmp_path / "dl"), "--formats", asked, "--json", "-q"]) == 0
    out = capsys.readouterr()
    assert len(json.loads(out.out)["ok"]) == len(shar) + 2
    assert ("deprecated" in out.err or "now called" in out.err) == (asked == "lhotse")
    with pytest.warns(FutureWarning):
        again = verify_release(tmp_path / "dl", formats=["lhotse"])
    assert len(again.ok) == len(shar) + 2 and again.passed
