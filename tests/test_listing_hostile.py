"""Hostile listings: paths that cannot be opened, globs over them, bytes that are not UTF-8, a
5 MB path, ``sources --lang`` totals and the temporaries of a run killed with SIGKILL.

Real files of every kind are made at test time: a symlink loop, a dangling symlink, a FIFO
(``os.mkfifo``), a Unix socket, a character device (``os.mknod``, root only), a directory and an
empty file. Each listed one must become a rejected row with a reason of its own (the decoder
tells them apart from ``os.stat`` alone and never opens a FIFO, which would block), never a
refused run and never a silently missing row.

Permission denied: the tests run as root, for whom ``chmod 000`` does not stop reads, so that
check runs in a child process that gives up root (``os.setuid`` to ``nobody``) before it asks the
decoder; as another user ``chmod 000`` is enough.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from fault_helpers import DEMO_AUDIO, ROOT, finish, kill_session, start_cli
from granary_pipe.config import ConfigError
from granary_pipe.ingest.manifest import list_recordings
from granary_pipe.report import fmt
from granary_pipe.stages.audio.decode import DecodeError, decode_file

HOSTILE = {
    "loop.wav": "symlink loop",
    "dangling.wav": "no such file",
    "fifo.wav": "not a regular file (FIFO)",
    "sock.wav": "not a regular file (socket)",
    "null.wav": "not a regular file (character device)",
    "dir.wav": "not a regular file (directory)",
    "empty.wav": "empty file",
}
"""Listed name → what its ``decode_error`` says (``gone.wav``, never made: ``no such file``)."""

CLI = [sys.executable, "-m", "granary_pipe.cli"]

LISTING_TMP = "granary-listing-"
"""Name prefix of a listing's temporary work directory (``ingest.spill.WORKDIR_PREFIX``)."""


def make_hostile(audio: Path) -> dict[str, str]:
    """The good file and every hostile kind under ``audio``; returns name → expected reason (the
    character device only where this process may make one)."""
    audio.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_AUDIO / "en_01.flac", audio / "good.flac")
    os.symlink("loop.wav", audio / "loop.wav")
    os.symlink("was_here.wav", audio / "dangling.wav")
    os.mkfifo(audio / "fifo.wav")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(audio / "sock.wav"))
    (audio / "dir.wav").mkdir()
    (audio / "empty.wav").write_bytes(b"")
    expected = dict(HOSTILE)
    try:
        os.mknod(audio / "null.wav", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        del expected["null.wav"]
    return expected


def manifest(d: Path, **fields) -> Path:
    path = d / "src.yaml"
    path.write_text(yaml.safe_dump({"name": "h", "license": "CC-BY-4.0", **fields}), encoding="utf-8")
    return path


def jsonl_source(d: Path, names: list[str]) -> Path:
    (d / "listing.jsonl").write_text("".join(json.dumps({"path": f"audio/{n}"}) + "\n" for n in names),
                                     encoding="utf-8")
    return manifest(d, listing="listing.jsonl")


def decode_pipeline(path: Path) -> Path:
    """decode → license gate: every listed path is opened (or refused) by the decoder; no model."""
    path.write_text(yaml.safe_dump({"name": "hostile", "units": {"recordings_per_unit": 4},
                                    "stages": [{"use": "audio.decode"}, {"use": "license.gate"}]}))
    return path


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environ = {**os.environ, **(env or {})}
    environ.pop("RAY_ADDRESS", None)
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environ)


def rejected_by_name(run: Path) -> dict[str, list[str]]:
    """Rejected rows' reasons per listed file name (``audio_relpath``'s last part)."""
    out: dict[str, list[str]] = {}
    for p in sorted(run.glob("units/*/rejected.parquet")):
        for r in pq.read_table(p, columns=["audio_relpath", "drop_reason"]).to_pylist():
            out.setdefault(r["audio_relpath"].rsplit("/", 1)[-1], []).append(r["drop_reason"])
    return out


# ----------------------------------------------------------------------------- the decoder

def test_decoder_tells_each_unopenable_kind_apart(tmp_path):
    """Each kind has its own reason naming the file; the FIFO is not 'empty file' and is never
    opened (the test would block)."""
    expected = make_hostile(tmp_path)
    expected["gone.wav"] = "no such file"
    for name, reason in expected.items():
        with pytest.raises(DecodeError) as info:
            decode_file(str(tmp_path / name), 60.0)
        assert str(info.value) == f"{reason}: {tmp_path / name}", name


def test_permission_denied_is_its_own_reason():
    """A file this user may not read, and a file under a folder it may not enter (made in a folder
    of ``/tmp`` the unprivileged child can reach; pytest's own is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="glh-perm-", dir="/tmp"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir()
        shutil.copy(DEMO_AUDIO / "en_01.flac", base / "secret.flac")
        shutil.copy(DEMO_AUDIO / "en_01.flac", locked / "inside.flac")
        os.chmod(base / "secret.flac", 0)
        os.chmod(locked, 0)
        probe = ("import json, os, sys\n"
                 "from granary_pipe.stages.audio.decode import DecodeError, decode_file\n"
                 "if os.geteuid() == 0:\n"
                 "    try:\n"
                 "        os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
                 "    except PermissionError:\n"
                 "        print('null'); sys.exit(0)\n"
                 "out = []\n"
                 "for p in sys.argv[1:]:\n"
                 "    try:\n"
                 "        decode_file(p, 60.0); out.append('decoded')\n"
                 "    except DecodeError as exc:\n"
                 "        out.append(str(exc))\n"
                 "print(json.dumps(out))\n")
        paths = [str(base / "secret.flac"), str(locked / "inside.flac")]
        got = subprocess.run([sys.executable, "-c", probe, *paths], capture_output=True, text=True, timeout=60,
                             cwd="/", env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert got.returncode == 0, got.stderr[-2000:]
        if json.loads(got.stdout) is None:
            pytest.skip("root here cannot give up root (no CAP_SETUID): permission checks mean nothing")
        assert json.loads(got.stdout) == [f"permission denied: {p}" for p in paths]
    finally:
        os.chmod(base / "locked", 0o755)
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- listings and globs

def test_listing_lists_every_unopenable_line(tmp_path):
    """A symlink loop (and every other kind) in a JSONL listing is listed, not a refused run."""
    expected = make_hostile(tmp_path / "audio")
    names = ["good.flac", *expected, "gone.wav"]
    _, table = list_recordings(jsonl_source(tmp_path, names))
    assert sorted(table.column("audio_relpath").to_pylist()) == sorted(f"audio/{n}" for n in names)


def test_glob_lists_unopenable_matches(tmp_path):
    """``audio: audio/*.wav`` lists the loop, the dangling link, the FIFO, the socket and the device
    (decode rejects each); a folder the glob matches is not a file and is not listed."""
    expected = make_hostile(tmp_path / "audio")
    _, table = list_recordings(manifest(tmp_path, audio="audio/*.wav"))
    want = sorted(f"audio/{n}" for n in expected if n != "dir.wav")
    assert sorted(table.column("audio_relpath").to_pylist()) == want


def test_audio_folder_lists_its_audio_recursively(tmp_path):
    """``audio: clips`` (a folder) lists every audio file under it, as ``clips/**/*`` would with
    the audio extensions; a folder without audio says it is a folder and suggests a glob."""
    clips = tmp_path / "clips"
    (clips / "a" / "b").mkdir(parents=True)
    for rel in ("one.flac", "a/two.wav", "a/b/three.opus"):
        shutil.copy(DEMO_AUDIO / "en_01.flac", clips / rel)
    (clips / "notes.txt").write_text("not audio")
    os.mkfifo(clips / "a" / "pipe.wav")
    _, table = list_recordings(manifest(tmp_path, audio="clips"))
    assert sorted(table.column("audio_relpath").to_pylist()) == [
        "clips/a/b/three.opus", "clips/a/pipe.wav", "clips/a/two.wav", "clips/one.flac"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        list_recordings(manifest(tmp_path, audio="empty"))
    assert "is a folder with no audio file" in str(info.value) and "'empty/**/*.wav'" in str(info.value)


# ----------------------------------------------------------------------------- runs, as a user runs them

@pytest.mark.e2e
def test_run_rejects_each_unopenable_path_and_reports_a_5mb_path_briefly(tmp_path):
    """``granary run`` on a JSONL listing of every kind plus a 5 MB path: exit 0, the good file
    kept, each other line one rejected row with its reason; ``granary report`` stays small (a
    5 MB value is cut in the middle in its tables) while ``--json`` keeps the whole value."""
    expected = make_hostile(tmp_path / "src" / "audio")
    expected["gone.wav"] = "no such file"
    long_name = "x" * 5_000_000 + ".wav"
    names = ["good.flac", *expected, long_name]
    source = jsonl_source(tmp_path / "src", names)
    run = tmp_path / "run"
    got = cli("run", str(decode_pipeline(tmp_path / "p.yaml")), "--source", str(source), "--out", str(run), "-q")
    assert got.returncode == 0, got.stderr[-3000:]
    rejected = rejected_by_name(run)
    assert "good.flac" not in rejected
    for name, reason in expected.items():
        shown = "was_here.wav" if name == "dangling.wav" else name  # ingest resolves symlinks
        assert rejected.get(name) == [f"decode_error: {reason}: {tmp_path / 'src' / 'audio' / shown}"], name
    assert rejected[long_name][0].startswith("decode_error: cannot open (File name too long): ")
    assert len(rejected) == len(names) - 1

    report = cli("report", str(run))
    assert report.returncode == 0, report.stderr[-3000:]
    assert "recordings in: %d of %d expected" % (len(names), len(names)) in report.stdout
    assert len(report.stdout) < 20_000, f"terminal report of {len(report.stdout)} characters"
    assert max(map(len, report.stdout.splitlines())) < 300
    assert "not a regular file (FIFO)" in report.stdout and "symlink loop" in report.stdout
    as_json = cli("report", str(run), "--json")
    assert as_json.returncode == 0 and long_name in as_json.stdout


def test_run_over_a_glob_counts_unopenable_matches(tmp_path):
    """``audio: audio/*.wav``: the loop, the FIFO and the rest are rows (rejected, each with its
    reason), so 'N of N expected' counts them."""
    expected = make_hostile(tmp_path / "src" / "audio")
    del expected["dir.wav"]
    source = manifest(tmp_path / "src", audio="audio/*.wav")
    run = tmp_path / "run"
    got = cli("run", str(decode_pipeline(tmp_path / "p.yaml")), "--source", str(source), "--out", str(run), "-q",
              "--executor", "beam")  # the same rows as on Ray (tests/test_beam_executor.py), without Ray's start
    assert got.returncode == 0, got.stderr[-3000:]
    rejected = rejected_by_name(run)
    assert {n: r[0].split(": ")[1] for n, r in rejected.items()} == expected
    report = cli("report", str(run))
    assert f"recordings in: {len(expected)} of {len(expected)} expected" in report.stdout


# ----------------------------------------------------------------------------- UTF-8

def _latin1_listing(d: Path) -> tuple[Path, Path, str]:
    (d / "listing.jsonl").write_bytes(b'{"path": "audio/a.wav"}\n{"path": "audio/caf\xe9.wav"}\n')
    return manifest(d, listing="listing.jsonl"), d / "listing.jsonl", ":2:20: not valid UTF-8 (byte 0xe9)"


def _latin1_tsv(d: Path) -> tuple[Path, Path, str]:
    (d / "clips").mkdir()
    (d / "train.tsv").write_bytes(b"path\tsentence\na.wav\thello\nb.wav\tna\xefve\n")
    return manifest(d, listing="train.tsv", reader="tsv"), d / "train.tsv", ":3:9: not valid UTF-8 (byte 0xef)"


def _latin1_manifest(d: Path) -> tuple[Path, Path, str]:
    path = d / "src.yaml"
    path.write_bytes(b"name: h\n# r\xe9sum\xe9\nlicense: CC-BY-4.0\naudio: '*.wav'\n")
    return path, path, ":2:4: not valid UTF-8 (byte 0xe9)"


@pytest.mark.parametrize("make", [_latin1_listing, _latin1_tsv, _latin1_manifest], ids=["jsonl", "tsv", "manifest"])
def test_bytes_not_utf8_are_named_by_file_line_and_column(tmp_path, make):
    source, bad, where = make(tmp_path)
    got = cli("run", str(decode_pipeline(tmp_path / "p.yaml")), "--source", str(source), "--out", str(tmp_path / "run"))
    assert got.returncode == 2, got.stderr[-2000:]
    assert f"{bad}{where}" in got.stderr and "codec" not in got.stderr, got.stderr
    assert not (tmp_path / "run").exists()


def test_pipeline_not_utf8_is_named_by_file_line_and_column(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_bytes(b"name: hostile\ndescription: \xff\xfe\nstages:\n- use: audio.decode\n")
    got = cli("run", str(pipeline), "--source", str(jsonl_source(tmp_path, ["a.wav"])), "--out", str(tmp_path / "r"))
    assert got.returncode == 2
    assert f"{pipeline}:2:14: not valid UTF-8 (byte 0xff)" in got.stderr, got.stderr


# ----------------------------------------------------------------------------- terminal tables

def test_long_cells_are_cut_in_the_middle():
    path = "/data/" + "d" * 5_000_000 + "/clip.wav"
    lines = fmt.text_table(["reason", "rows"], [[f"decode_error: no such file: {path}", 1], ["short", 2]])
    assert max(map(len, lines)) <= 2 + fmt.CELL_CHARS + 2 + 4
    assert "decode_error: no such file: /data/dd" in lines[2] and "…" in lines[2] and "d/clip.wav" in lines[2]
    assert fmt.clip("a" * 80) == "a" * 80 and len(fmt.clip("a" * 81)) == 80


# ----------------------------------------------------------------------------- sources --lang

def _catalog_entry(d: Path, name: str, languages: list[str], hours: dict) -> None:
    """A catalog entry: librivoxdeen's with another name, languages and hours."""
    data = yaml.safe_load((ROOT / "manifests" / "catalog" / "librivoxdeen.yaml").read_text(encoding="utf-8"))
    data["name"] = name
    data["catalog"]["languages"] = languages
    data["catalog"]["hours"] = hours
    data["catalog"]["surveys"] = []
    (d / f"{name}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


def test_sources_lang_totals_count_only_the_chosen_languages(tmp_path):
    """de 10 h of a de+en corpus (100 h en), a 5 h pl corpus, and a de+fr corpus that publishes
    only a 50 h total: ``--lang de,pl`` totals 15 h and names the corpus it could not split."""
    _catalog_entry(tmp_path, "deen", ["de", "en"], {"by_lang": {"de": 10, "en": 100}})
    _catalog_entry(tmp_path, "plonly", ["pl"], {"total": 5})
    _catalog_entry(tmp_path, "defr", ["de", "fr"], {"total": 50})
    _catalog_entry(tmp_path, "enonly", ["en"], {"total": 7})
    got = cli("sources", "--catalog", str(tmp_path), "--lang", "de,pl")
    assert got.returncode == 0, got.stderr
    assert "3 corpora; 15 h of compliant audio in de,pl" in got.stdout, got.stdout
    assert "Not counted" in got.stdout and "defr" in got.stdout.splitlines()[-1]
    rows = json.loads(cli("sources", "--catalog", str(tmp_path), "--lang", "de,pl", "--json").stdout)
    assert {r["corpus"]: r["hours_in_langs"] for r in rows} == {"deen": 10.0, "defr": None, "plonly": 5.0}
    assert "4 corpora; 172 h of compliant audio" in cli("sources", "--catalog", str(tmp_path)).stdout


# ----------------------------------------------------------------------------- SIGKILL

def test_sigkill_of_run_leaves_no_listing_temporaries_after_the_next_run(tmp_path):
    """``granary run`` killed with SIGKILL (its whole session) while its listing's work directory
    exists: the next ``granary run`` removes it."""
    tmp = Path(tempfile.mkdtemp(prefix="glh-", dir="/tmp"))  # short: Ray's sockets live under $TMPDIR
    try:
        (tmp_path / "src" / "audio").mkdir(parents=True)
        shutil.copy(DEMO_AUDIO / "en_01.flac", tmp_path / "src" / "audio" / "good.flac")
        source = jsonl_source(tmp_path / "src", ["good.flac"])
        pipeline = decode_pipeline(tmp_path / "p.yaml")
        proc = start_cli("run", str(pipeline), "--source", str(source), "--out", str(tmp_path / "run"),
                         log=tmp_path / "run.log", env={"TMPDIR": str(tmp)})
        deadline = time.monotonic() + 120
        while not list(tmp.glob(f"{LISTING_TMP}*")):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-2000:]
            time.sleep(0.02)
        kill_session(proc.pid)
        proc.wait()
        assert list(tmp.glob(f"{LISTING_TMP}*")), "the killed run left nothing: the test did not kill it in time"
        again = start_cli("run", str(pipeline), "--source", str(source), "--out", str(tmp_path / "run"),
                          "--executor", "beam", log=tmp_path / "rerun.log", env={"TMPDIR": str(tmp)})
        assert finish(again, timeout=300) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        assert not list(tmp.glob(f"{LISTING_TMP}*"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_listing_temporaries_of_living_owners_are_kept(tmp_path):
    """Only orphans go: a directory held by a living process stays, and so does one named by a
    dead PID whose lock is still held (its owner runs in another PID namespace on a shared /tmp)."""
    from granary_pipe.ingest.spill import listing_workdir, remove_orphaned_workdirs  # e58e929 had neither

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with listing_workdir(tmp_path) as alive, listing_workdir(tmp_path) as other:
        elsewhere = other.with_name(other.name.replace(f"-{os.getpid()}-", f"-{int(dead.stdout)}-"))
        other.rename(elsewhere)  # its lock, taken by this process, stays held
        orphan = tmp_path / f"{LISTING_TMP}{int(dead.stdout)}-abcd"
        orphan.mkdir()
        (orphan / ".lock").touch()
        assert remove_orphaned_workdirs(tmp_path) == [orphan]
        assert alive.is_dir() and elsewhere.is_dir()
        elsewhere.rename(other)
