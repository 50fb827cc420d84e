"""`granary train | evaluate | transcribe | plot-schedules`."""

from __future__ import annotations

import json

from granary_pipe.cli import main
from granary_pipe.train.checkpoint import load_checkpoint
from granary_pipe.train.metrics import read_metrics

try:
    from tests.test_train_fixtures import tiny_release  # noqa: F401 (fixture)
    from tests.test_train_loop import TINY_YAML
except ImportError:
    from test_train_fixtures import tiny_release  # noqa: F401
    from test_train_loop import TINY_YAML

SETS = ["--set", "train.log_every=1", "--set", "train.threads=1", "--set", "data.loader_workers=0",
        "--set", "data.held_out_pct=25", "--set", "tokenizer.model_type=char", "--set", "schedule.name=exponential"]


def test_train_resume_evaluate_transcribe(tiny_release, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--data", str(tiny_release), "--out", str(out), "--config", str(TINY_YAML),
                 "--max-steps", "2", "-q", *SETS]) == 0
    assert "step 2, loss" in capsys.readouterr().out
    # rerun without --config: resumes with the checkpoint's config
    assert main(["train", "--data", str(tiny_release), "--out", str(out), "--max-steps", "3", "-q"]) == 0
    assert "step 3" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert load_checkpoint(out)["config"]["schedule"]["name"] == "exponential"

    assert main(["evaluate", "--checkpoint", str(out), "--split", "all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["utterances"] == 8 and result["step"] == 3 and 0 <= result["cer"]
    assert main(["evaluate", "--checkpoint", str(out)]) == 0  # held-out rows (25 %)
    assert "WER" in capsys.readouterr().out

    flac = next(tiny_release.glob("wds/en/*.tar"))
    import tarfile

    with tarfile.open(flac) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".flac"))
        audio = tmp_path / "clip.flac"
        audio.write_bytes(tar.extractfile(member).read())
    assert main(["transcribe", "--checkpoint", str(out), str(audio), "--json"]) == 0
    item = json.loads(capsys.readouterr().out.splitlines()[0])
    assert item["audio"] == str(audio) and isinstance(item["text"], str)


def test_bad_set_and_bad_config_key_are_errors(tiny_release, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_release), "--out", str(tmp_path / "o"), "--config", str(TINY_YAML),
                 "--set", "schedule.nme=linear"]) == 2
    assert "schedule.nme: unknown key" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_release), "--out", str(tmp_path / "o"), "--config", str(TINY_YAML),
                 "--set", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_plot_schedules(tmp_path, capsys):
    assert main(["plot-schedules", "--out", str(tmp_path / "lr.png"), "--warmup-steps", "200"]) == 0
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"


def test_a_release_url_that_does_not_answer_is_refused_before_out_is_created(tmp_path, capsys):
    """``--data`` as a URL (``file://`` here; HTTP goes the same way) whose release.json is missing,
    or a release without WebDataset shards: refused in one line, ``--out`` not created."""
    out = tmp_path / "model"
    assert main(["train", "--data", f"file://{tmp_path}/nonexistent", "--out", str(out), "-q"]) == 2
    assert "nonexistent/release.json" in capsys.readouterr().err
    assert not out.exists()
    no_wds = tmp_path / "rel"
    no_wds.mkdir()
    (no_wds / "release.json").write_text(json.dumps({"shards": [], "totals": {}}))
    assert main(["train", "--data", f"file://{no_wds}", "--out", str(out), "-q"]) == 2
    assert "no WebDataset (wds) shards" in capsys.readouterr().err
    assert not out.exists()
