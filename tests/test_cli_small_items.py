"""Through the real CLI: ``release --lang`` with a language the run
cannot release, and the checkpoint path ``evaluate --help`` shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from granary_pipe.cli import main

try:
    from tests.helpers_rundir import make_run
    from tests.test_train_fixtures import tiny_release  # noqa: F401 (fixture)
    from tests.test_train_loop import TINY_YAML
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import make_run
    from test_train_fixtures import tiny_release  # noqa: F401
    from test_train_loop import TINY_YAML


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A committed run whose kept rows are in en and de (all de rows CC-BY-4.0)."""
    return make_run(tmp_path_factory.mktemp("lang-run"))


@pytest.mark.parametrize("langs", ["en,xx", "xx", "xx,en,de"])
def test_release_lang_naming_a_language_the_run_lacks_is_an_error(run_dir, tmp_path, capsys, langs):
    """Every form of ``--lang`` naming a language the run lacks is refused naming it; nothing is written."""
    out = tmp_path / "rel"
    assert main(["release", str(run_dir), "--out", str(out), "--lang", langs, "-q"]) == 2
    err = capsys.readouterr().err
    assert "xx (not in the run)" in err and "the run's languages: de, en" in err, err
    assert f"--lang {','.join(sorted(langs.split(',')))}:" in err and not out.exists()


def test_release_lang_whose_rows_the_license_leaves_out_is_an_error(run_dir, tmp_path, capsys):
    """de is in the run, but no de row may go out under CC0-1.0: asked for by name, that is an error
    (as it was with --lang de alone), not a release without de."""
    out = tmp_path / "rel"
    assert main(["release", str(run_dir), "--out", str(out), "--lang", "en,de", "--release-license", "CC0-1.0",
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "de (no row with a license compatible with CC0-1.0)" in err and not out.exists(), err
    assert main(["release", str(run_dir), "--out", str(out), "--lang", "en,de", "-q"]) == 0  # both go out


def test_evaluate_help_names_the_checkpoint_path_the_trainer_writes(tiny_release, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    shown = re.findall(r"model/(\S+\.pt)", capsys.readouterr().out)
    assert shown, "evaluate --help shows no checkpoint file"
    out = tmp_path / "model"
    assert main(["train", "--data", str(tiny_release), "--out", str(out), "--config", str(TINY_YAML),
                 "--max-steps", "1", "-q", "--set", "train.threads=1", "--set", "data.loader_workers=0",
                 "--set", "tokenizer.model_type=char"]) == 0
    written = [str(p.relative_to(out)) for p in out.rglob("*.pt")]
    assert len(written) == 1
    for path in shown:  # the same directory and name, the step aside
        assert re.sub(r"\d", "9", path) == re.sub(r"\d", "9", written[0]), (path, written)
