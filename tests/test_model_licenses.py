"""Licenses of models given by path or served over an API: the pipeline declares them, ``run.json``
records them (and where they came from), and ``granary release`` / ``granary licenses audit``
refuse a run whose labels come from a model whose license is unknown or forbids a release.

Each case is a real pipeline file: its stages' ``models()`` are described the way ``granary run``
records them, into a small committed run directory (``helpers_rundir.make_run``)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from granary_pipe import audit, cli, models
from granary_pipe.config import ConfigError, load_pipeline
from granary_pipe.io.release import build_release

try:
    from tests.helpers_rundir import Row, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import Row, make_run

ROWS = [Row("r1-s0", "r1", "en", 1.0, text="hello there", translation="hallo da", translation_lang="de")]


def weights_dir(root: Path, name: str, file: str = "model.safetensors") -> Path:
    """A model directory with one (fake) weights file: enough to be described, never loaded."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / file).write_bytes(name.encode() * 64)
    return d


def stage_yaml(kind: str, root: Path, license: str | None) -> tuple[str, str, str]:
    """``(stage YAML, run.json model key, stage name)`` for one kind of model, its license declared or not."""
    declared = f", model_license: {license}" if license else ""
    if kind == "api":
        return (f"  - use: pnc.llm\n    params: {{backend: {{name: openai, base_url: 'http://127.0.0.1:9/v1', "
                f"model: served-llm{declared}}}}}\n", "openai:served-llm", "pnc.llm")
    if kind == "llm_path":
        path = weights_dir(root, "my-llm")
        return (f"  - use: translate.llm\n    params: {{backend: {{name: transformers, model: '{path}'{declared}}}}}\n",
                str(path), "translate.llm")
    path = weights_dir(root, "whisper-ft", "model.bin")
    licenses_param = f", model_licenses: {{'{path}': {license}}}" if license else ""
    if kind == "asr_path":
        return (f"  - use: asr.two_pass\n    params: {{models_by_lang: {{default: '{path}'}}{licenses_param}}}\n",
                str(path), "asr.two_pass")
    return (f"  - use: translate.whisper\n    params: {{model: '{path}'{licenses_param}}}\n", str(path),
            "translate.whisper")


def run_with(tmp_path: Path, kind: str, license: str | None) -> tuple[Path, str, str]:
    """A committed run whose run.json records the models of a one-stage pipeline (as ``granary run`` does)."""
    text, key, stage = stage_yaml(kind, tmp_path / "models", license)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: x\nstages:\n" + text)
    _, stages = load_pipeline(pipeline)
    run = make_run(tmp_path, {"u000000": ROWS}, uncommitted={}, failed={})
    info = json.loads((run / "run.json").read_text())
    info["models"] = {m: models.describe(m) for s in stages for m in s.models()}  # as pipeline.run_pipeline
    (run / "run.json").write_text(json.dumps(info))
    return run, key, stage


KINDS = ["api", "llm_path", "whisper_path", "asr_path"]
HOW = {"api": "params.backend.model_license: SPDX-ID", "llm_path": "params.backend.model_license: SPDX-ID",
       "whisper_path": "params.model_licenses: {", "asr_path": "params.model_licenses: {"}


# ----------------------------------------------------------------------------- run.json records

@pytest.mark.parametrize("kind", KINDS)
def test_declared_license_is_recorded_with_its_source(tmp_path, kind):
    run, key, stage = run_with(tmp_path, kind, "Apache-2.0")
    m = json.loads((run / "run.json").read_text())["models"][key]
    assert (m["license"], m["license_source"], m["stage"]) == ("Apache-2.0", "declared", stage)
    if kind == "api":
        assert m["base_url"] == "http://127.0.0.1:9/v1" and m["model_id"] == "served-llm"
        assert "sha256" not in m and "path" not in m  # nothing local to hash
    else:
        assert len(m["sha256"]) == 64 and m["path"] == key


@pytest.mark.parametrize("kind", KINDS)
def test_undeclared_license_is_unknown(tmp_path, kind):
    run, key, _ = run_with(tmp_path, kind, None)
    m = json.loads((run / "run.json").read_text())["models"][key]
    assert (m["license"], m["license_source"]) == ("unknown", "unknown")


def test_registry_models_keep_their_license_and_a_contradiction_is_refused(tmp_path):
    assert models.describe("whisper-base")["license_source"] == "registry"
    ok = models.ModelRef("qwen2.5-7b-instruct", "pnc.llm", "Apache-2.0", "backend.model_license")
    assert models.license_of(ok) == ("Apache-2.0", "registry")
    with pytest.raises(ValueError, match=r"pnc\.llm: backend\.model_license MIT for 'qwen2\.5-7b-instruct' "
                                         r"contradicts the model registry \(Apache-2\.0\): remove it"):
        models.ModelRef("qwen2.5-7b-instruct", "pnc.llm", "MIT", "backend.model_license")
    # a registry name served over an API is only a label the server chose: the license must be declared
    served = models.ModelRef("openai:qwen2.5-7b-instruct", "pnc.llm", None, "backend.model_license",
                             base_url="http://h/v1", served_name="qwen2.5-7b-instruct")
    assert models.license_of(served) == ("unknown", "unknown")
    clone = pickle.loads(pickle.dumps(served))
    assert clone == served and (clone.stage, clone.base_url, clone.served_name) == ("pnc.llm", "http://h/v1",
                                                                                   "qwen2.5-7b-instruct")


def test_declared_license_is_validated_where_it_is_written(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: x\nstages:\n  - use: pnc.llm\n    params:\n      backend: {name: openai, "
                        "base_url: 'http://h/v1', model: q, model_license: free for research}\n")
    with pytest.raises(ConfigError, match=r"backend\.openai\.model_license.*not in licenses/registry\.yaml"):
        load_pipeline(pipeline)
    whisper = "name: x\nstages:\n  - use: translate.whisper\n    params: {model_licenses: {/m: %s}}\n"
    pipeline.write_text(whisper % "Apache-ish")
    with pytest.raises(ConfigError, match=r"model_licenses.*'Apache-ish' is not in licenses/registry\.yaml"):
        load_pipeline(pipeline)
    pipeline.write_text(whisper % "Apache 2.0")
    _, (stage,) = load_pipeline(pipeline)
    assert stage.model_licenses == {"/m": "Apache-2.0"}  # a known spelling becomes the registry id
    with pytest.raises(ValueError, match=r"translate\.whisper: model_licenses names \['/m'\], which this stage "
                                         r"does not use \(its models: \['whisper-base', 'fasttext-lid176'\]\)"):
        stage.models()


# ----------------------------------------------------------------------------- release and audit, both ways

@pytest.mark.parametrize("kind", KINDS)
def test_declared_permissive_license_allows_the_release(tmp_path, kind):
    run, key, _ = run_with(tmp_path, kind, "Apache-2.0")
    rel = build_release(run, tmp_path / "rel", progress=False)
    assert rel["totals"]["rows"] == 1 and rel["models"][key]["license"] == "Apache-2.0"
    assert not set(models.PRIVATE_KEYS) & set(rel["models"][key])  # no local path, no server address
    assert audit.audit_path(run).ok


@pytest.mark.parametrize("kind", KINDS)
def test_undeclared_license_refuses_the_release_saying_how_to_declare_it(tmp_path, kind):
    run, key, stage = run_with(tmp_path, kind, None)
    with pytest.raises(ValueError) as info:
        build_release(run, tmp_path / "rel", progress=False)
    message = str(info.value)
    assert "\n" not in message and "release refused" in message
    assert f"stage {stage}: model {key!r} under unknown: no license declared: declare it with {HOW[kind]}" \
        in message, message
    assert not (tmp_path / "rel").exists()
    report = audit.audit_path(run)
    assert report.exit_code == 1 and [(v.kind, v.name, v.stage) for v in report.violations] == [("model", key, stage)]


@pytest.mark.parametrize("kind", KINDS)
def test_declared_non_commercial_license_refuses_the_release(tmp_path, kind):
    run, key, stage = run_with(tmp_path, kind, "CC-BY-NC-4.0")
    with pytest.raises(ValueError, match=rf"release refused: stage {stage}: model '.*' under CC-BY-NC-4.0: "
                                         r"non-commercial: its outputs cannot go into an open release"):
        build_release(run, tmp_path / "rel", progress=False)
    (v,) = audit.audit_path(run).violations
    assert (v.name, v.license, v.stage) == (key, "CC-BY-NC-4.0", stage)


def test_cli_release_and_audit_refuse_in_one_line(tmp_path, capsys):
    run, _, _ = run_with(tmp_path, "api", None)
    assert cli.main(["release", str(run), "--out", str(tmp_path / "rel"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "params.backend.model_license: SPDX-ID" in err, err
    assert cli.main(["licenses", "audit", str(run)]) == 1
    out = capsys.readouterr().out
    assert "openai:served-llm" in out and "no license declared" in out and "license from" in out


def test_old_runs_without_stage_still_get_a_hint(tmp_path):
    (v,) = audit.audit_models({"/models/x": {"model_id": "/models/x", "license": "unknown"}})
    assert v.stage is None and "give the model by registry name, or declare its license" in str(v)
