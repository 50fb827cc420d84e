"""The ``granary`` command line as a user meets it: help with a description and examples for every
command, one meaning per flag, ``-v``/``-q`` anywhere, ``--json`` on every command that prints a
result, and for each user error one line on stderr and the documented exit code (0 ok, 1 a check
failed, 2 bad usage or input, 130 interrupted), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from granary_pipe.cli import build_parser, main
from granary_pipe.cli.common import describe_error

try:
    from tests.fault_helpers import in_tmpfs
    from tests.helpers_rundir import make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from fault_helpers import in_tmpfs
    from helpers_rundir import make_run

ROOT = Path(__file__).resolve().parents[1]
RESULT_COMMANDS = ("run", "release", "download", "verify", "train", "evaluate", "status", "report", "sources",
                   "stages", "licenses audit", "submit", "transcribe")


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[prefix + name] = sub
                out.update(_subparsers(sub, prefix + name + " "))
    return out


COMMANDS = _subparsers(build_parser())


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120,
        pre: str = "") -> subprocess.CompletedProcess:
    """``granary ARGS`` in a fresh interpreter (``pre``: Python run before, e.g. to hide a package)."""
    code = f"{pre}\nimport sys\nfrom granary_pipe.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, env={**os.environ, **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    """The single line a failed command printed on stderr (no traceback, nothing else)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"granary {command}: error: "), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ help


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_description_and_an_example(name):
    parser = COMMANDS[name]
    assert parser.description and len(parser.description) > 40, name
    text = parser.format_help()
    assert "examples:" in text and f"granary {name.split()[0]}" in text.split("examples:", 1)[1], text


def test_top_level_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {code}" in text, text
    assert "interrupted" in text and "bad usage or input" in text


@pytest.mark.parametrize("name", RESULT_COMMANDS)
def test_commands_that_print_a_result_take_json(name):
    assert "--json" in COMMANDS[name]._option_string_actions, name


def test_verbose_and_quiet_work_before_and_after_the_command():
    parse = build_parser().parse_args
    assert parse(["sources", "-v", "-q"]).verbose and parse(["sources", "-q"]).quiet
    assert parse(["-v", "sources"]).verbose and parse(["-q", "release", "R", "--out", "X"]).quiet
    assert parse(["licenses", "audit", "x", "-q"]).quiet
    assert not hasattr(parse(["sources"]), "verbose")  # absent means off: a later default cannot reset it


def test_usage_error_exit_code_is_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["release", "--nope"])
    assert stop.value.code == 2


# ------------------------------------------------------------------ one syntax everywhere


@pytest.mark.parametrize("argv", [["release", "R", "--out", "X", "--lang", "English"],
                                  ["download", "U", "--out", "X", "--lang", "en;de"],
                                  ["verify", "D", "--lang", "EN"], ["sources", "--lang", ""]])
def test_lang_is_one_comma_separated_syntax_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "comma-separated ISO 639 language codes like en,de" in capsys.readouterr().err


def test_sources_lang_takes_a_list(capsys):
    assert main(["sources", "--lang", "de,pl", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all({"de", "pl"} & set(r["languages"]) for r in rows)
    assert any("pl" in r["languages"] and "de" not in r["languages"] for r in rows)


@pytest.mark.parametrize("command", ["release", "download", "verify"])
def test_formats_all_is_accepted_wherever_formats_are(command):
    args = {"release": ["release", "R", "--out", "X"], "download": ["download", "U", "--out", "X"],
            "verify": ["verify", "D"]}[command]
    assert build_parser().parse_args([*args, "--formats", "all"]).formats is None  # None: every format
    assert build_parser().parse_args([*args, "--formats", "wds,parquet"]).formats == ["wds", "parquet"]


def test_release_download_verify_json_and_formats_all(tmp_path, capsys):
    run = make_run(tmp_path)
    rel = tmp_path / "rel"
    assert main(["release", str(run), "--out", str(rel), "--formats", "all", "--shard-rows", "3", "-q", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    listed = json.loads((rel / "release.json").read_text())
    assert made["files"] == len(listed["shards"]) and set(made["bytes"]) == {"parquet", "wds", "nemo", "lhotse_shar"}
    dl = tmp_path / "dl"
    assert main(["download", str(rel), "--out", str(dl), "--formats", "all", "--lang", "de", "--json", "-q"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["passed"] and got["fetched"] and all("/de/" in p for p in got["fetched"] if "/" in p)
    assert main(["verify", str(dl), "--json", "--jobs", "3"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["passed"] and sorted(checked["ok"]) == sorted(got["fetched"])
    next(p for p in dl.rglob("*.tar")).write_bytes(b"broken")
    assert main(["verify", str(dl), "--json"]) == 1
    assert not json.loads(capsys.readouterr().out)["passed"]


def test_verify_progress_lines_when_not_a_terminal(tmp_path, capsys):
    rel = tmp_path / "rel"
    assert main(["release", str(make_run(tmp_path)), "--out", str(rel), "-q"]) == 0
    capsys.readouterr()
    assert main(["verify", str(rel), "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "verify: " in err and "(100%)" in err and "\r" not in err, err


def test_stages_lists_every_stage_and_json_is_a_schema_the_shipped_pipelines_pass(capsys):
    import jsonschema
    import yaml

    from granary_pipe import registry

    assert main(["stages"]) == 0
    text = capsys.readouterr().out
    assert all(f"\n{name}  [" in f"\n{text}" for name in registry.STAGES), text[:500]
    assert "beam_size" in text and "CTranslate2 device" in text
    assert main(["stages", "--json"]) == 0
    schema = json.loads(capsys.readouterr().out)
    for path in sorted((ROOT / "granary_pipe" / "_data" / "pipelines").glob("*.yaml")):
        if not path.name.startswith("train-"):
            jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    bad = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    bad["stages"][0]["params"]["max_duration"] = 5  # a typo of max_duration_s
    with pytest.raises(jsonschema.ValidationError, match="max_duration"):
        jsonschema.validate(bad, schema)
    assert main(["stages", "asr.nope"]) == 2


def test_every_stage_parameter_has_a_description():
    from granary_pipe.stage_docs import stage_reference

    missing = [(s["name"], p["name"]) for s in stage_reference() for p in s["params"]
               if not p["description"] and not s["name"].startswith("test.")]  # test-only stages of fault_helpers
    assert not missing, f"parameters without a description (granary stages shows them): {missing}"


# ------------------------------------------------------------------ addresses


def test_run_refuses_a_dashboard_url_and_points_at_submit():
    out = cli("run", "demo", "--out", "X", "--ray-address", "http://head:8265")
    assert out.returncode == 2
    assert "granary submit --dashboard http://head:8265" in out.stderr and "Traceback" not in out.stderr


def test_jobs_commands_refuse_a_cluster_address_and_point_at_ray_address(capsys):
    for argv in (["status", "J", "--dashboard", "ray://head:10001"], ["logs", "J", "--dashboard", "auto"],
                 ["submit", "p.yaml", "--source", "s.yaml", "--out", "/o", "--dashboard", "head:6379"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        assert "--ray-address" in capsys.readouterr().err


def test_refused_connection_to_a_ray_cluster_is_one_line_and_writes_nothing(tmp_path):
    port = free_port()
    out = cli("run", "demo", "--out", str(tmp_path / "run"), "--ray-address", f"127.0.0.1:{port}", timeout=60)
    assert out.returncode == 2
    line = one_error_line(out, "run")
    assert f"127.0.0.1:{port}" in line and "connection refused" in line
    assert not (tmp_path / "run").exists()


def test_refused_connection_to_a_dashboard_is_one_line():
    port = free_port()
    out = cli("status", "raysubmit_x", "--dashboard", f"http://127.0.0.1:{port}")
    assert out.returncode == 2
    line = one_error_line(out, "status")
    assert f"127.0.0.1:{port}" in line and "refused" in line


def test_refused_connection_for_a_download_is_one_line(tmp_path):
    port = free_port()
    out = cli("download", f"http://127.0.0.1:{port}/release.json", "--out", str(tmp_path / "dl"), "--retries", "0")
    assert out.returncode == 2
    line = one_error_line(out, "download")
    assert f"127.0.0.1:{port}/release.json" in line and "refused" in line


# ------------------------------------------------------------------ missing extras, files


@pytest.mark.parametrize("module,extra,argv", [
    ("apache_beam", "beam", ["run", "demo", "--out", "{tmp}/run", "--executor", "beam"]),
    ("torch", "train", ["train", "--data", "{tmp}", "--out", "{tmp}/model"]),
])
def test_a_missing_extra_names_the_extra_to_install(module, extra, argv, tmp_path):
    out = cli(*[a.format(tmp=tmp_path) for a in argv], pre=f"import sys; sys.modules[{module!r}] = None")
    assert out.returncode == 2
    line = one_error_line(out, argv[0])
    assert f"needs the [{extra}] extra" in line and f"pip install 'granary_pipe[{extra}]'" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("argv,named", [
    (["run", "{tmp}/nope.yaml", "--source", "demo", "--out", "{tmp}/run"], "{tmp}/nope.yaml"),
    (["run", "demo", "--source", "{tmp}/corpus.yaml", "--out", "{tmp}/run"], "{tmp}/corpus.yaml"),
    (["release", "{tmp}/norun", "--out", "{tmp}/rel"], "{tmp}/norun"),
    (["verify", "{tmp}/nodir"], "{tmp}/nodir/release.json"),
    (["report", "{tmp}/nodir"], "{tmp}/nodir"),
    (["train", "--data", "{tmp}/nodata", "--out", "{tmp}/model"], "{tmp}/nodata/release.json"),
])
def test_a_missing_file_is_one_line_naming_it_and_nothing_is_created(argv, named, tmp_path):
    out = cli(*[a.format(tmp=tmp_path) for a in argv])
    assert out.returncode == 2, out.stderr
    assert named.format(tmp=tmp_path) in one_error_line(out, argv[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_error_lines_for_os_errors():
    assert describe_error(PermissionError(13, "Permission denied", "/data/x")) == ("permission denied: /data/x", 2)
    assert describe_error(OSError(28, "No space left on device", "/data/y")) == ("no space left on device: /data/y", 2)
    assert describe_error(OSError(30, "Read-only file system")) == ("read-only file system", 2)
    line, code = describe_error(KeyError("x"))
    assert code == 2
    line, code = describe_error(ZeroDivisionError("boom"))
    assert code == 1 and "internal error" in line and "-v" in line


# ------------------------------------------------------------------ disks that refuse


def _mounted(tmp_path: Path, argv: list[str], options: str) -> subprocess.CompletedProcess:
    """``granary ARGV`` with a small tmpfs (``options``) mounted at ``tmp_path/mnt``, in a private
    mount namespace (user namespace too, so it needs no root)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = "import sys; from granary_pipe.cli import main; sys.exit(main(sys.argv[1:]))"
    return in_tmpfs(mnt, options, [sys.executable, "-c", code, *argv])


@pytest.mark.parametrize("command,options,expected", [
    ("release", "size=64k", "no space left on device"),
    ("download", "size=64k", "no space left on device"),
    ("release", "size=1m,ro", "read-only file system"),
])
def test_a_disk_that_takes_no_file_is_one_line_naming_the_place(command, options, expected, tmp_path):
    run = make_run(tmp_path / "runs")
    source = run
    if command == "download":
        source = tmp_path / "rel"
        assert main(["release", str(run), "--out", str(source), "-q"]) == 0
    target = tmp_path / "mnt" / "out"
    out = _mounted(tmp_path, [command, str(source), "--out", str(target), "-q"], options)
    assert out.returncode == 2, out.stderr
    line = one_error_line(out, command)
    assert expected in line and str(target) in line


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory no one may create files in: immutable as root (chattr +i), mode 0555 otherwise."""
    d = tmp_path / "locked"
    d.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(d)], check=True)
    else:
        d.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            (d / "probe").write_text("x")
        yield d
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(d)], check=True)
        d.chmod(0o755)


def test_permission_error_is_one_line_naming_the_path(tmp_path, unwritable_dir):
    run = make_run(tmp_path / "runs")
    out = cli("release", str(run), "--out", str(unwritable_dir / "rel"), "-q")
    assert out.returncode == 2, out.stderr
    line = one_error_line(out, "release")
    assert ("permission denied" in line or "operation not permitted" in line) and str(unwritable_dir) in line
