"""Pipeline config: the demo loads; every kind of mistake is a ConfigError naming file, key and line."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from granary_pipe import registry
from granary_pipe.config import ConfigError, load_pipeline, read_yaml

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
name: tiny
description: two stages
units:
  recordings_per_unit: 4
stages:
  - use: audio.decode
    params:
      max_duration_s: 60
  - use: segment.silero
    params:
      max_segment_s: 20
      min_silence_duration_ms: 300
    resources: {cpus: 0.5}
    batch_size: 4
"""


def write(tmp_path: Path, text: str, name: str = "pipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert hits, needle
    return hits[0]


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    return str(info.value)


def test_demo_pipeline_loads_with_its_params():
    config, stages = load_pipeline(REPO / "pipelines" / "demo.yaml")
    names = [s.name for s in stages]
    assert names == [spec.use for spec in config.stages]
    assert names[0] == "audio.decode"
    assert {"audio.decode", "license.gate", "segment.silero", "asr.two_pass",
            "filter.basic"} <= set(names)
    by_name = {s.name: s for s in stages}
    # params, resources and batch sizes from the file reach the stage objects
    assert by_name["segment.silero"].max_segment_s == config.stages[names.index("segment.silero")].params["max_segment_s"]
    asr_spec = config.stages[names.index("asr.two_pass")]
    assert by_name["asr.two_pass"].models_by_lang == asr_spec.params["models_by_lang"]
    assert by_name["asr.two_pass"].batch_size == asr_spec.batch_size
    assert by_name["asr.two_pass"].resources.cpus == asr_spec.resources.cpus
    assert config.units.recordings_per_unit >= 1


def test_small_pipeline_values_and_defaults(tmp_path):
    config, stages = load_pipeline(write(tmp_path, GOOD))
    decode, seg = stages
    assert config.name == "tiny" and config.units.recordings_per_unit == 4
    assert config.units.max_attempts == 2  # default filled in
    assert decode.max_duration_s == 60.0
    assert seg.max_segment_s == 20.0 and seg.min_silence_duration_ms == 300
    assert seg.resources.cpus == 0.5 and seg.batch_size == 4
    assert seg.speech_pad_ms == 200  # stage default


def test_unknown_top_level_key(tmp_path):
    text = GOOD + "colour: blue\n"
    path = write(tmp_path, text)
    msg = error_of(path)
    assert str(path) in msg
    assert "colour" in msg and "unknown key" in msg
    assert f":{line_of(text, 'colour')}:" in msg


def test_unknown_stage_param_names_file_key_path_and_line(tmp_path):
    text = GOOD.replace("      min_silence_duration_ms: 300\n",
                        "      min_silence_duration_ms: 300\n      beam_sise: 5\n")
    path = write(tmp_path, text)
    msg = error_of(path)
    assert str(path) in msg
    assert "stages.1.params.beam_sise" in msg
    assert "unknown key" in msg
    assert f"{path}:{line_of(text, 'beam_sise')}:" in msg


def test_bad_value_type_names_key_and_line(tmp_path):
    text = GOOD.replace("max_segment_s: 20", "max_segment_s: twenty")
    path = write(tmp_path, text)
    msg = error_of(path)
    assert "stages.1.params.max_segment_s" in msg
    assert f"{path}:{line_of(text, 'twenty')}:" in msg
    assert "number" in msg.lower()  # pydantic: "Input should be a valid number"


def test_out_of_range_value_is_an_error(tmp_path):
    text = GOOD.replace("max_segment_s: 20", "max_segment_s: 90")  # le=30
    msg = error_of(write(tmp_path, text))
    assert "stages.1.params.max_segment_s" in msg
    assert "30" in msg


def test_bad_knob_value_names_key(tmp_path):
    text = GOOD.replace("batch_size: 4", "batch_size: 0")
    msg = error_of(write(tmp_path, text))
    assert "stages.1.batch_size" in msg
    assert f":{line_of(text, 'batch_size: 0')}:" in msg


def test_knob_given_inside_params_is_an_error(tmp_path):
    text = GOOD.replace("      max_duration_s: 60\n", "      max_duration_s: 60\n      resources: {cpus: 2}\n")
    msg = error_of(write(tmp_path, text))
    assert "stages.0" in msg and "resources" in msg


def test_unknown_stage_name_lists_known_names(tmp_path):
    text = GOOD.replace("use: segment.silero", "use: segment.sillero")
    path = write(tmp_path, text)
    msg = error_of(path)
    assert "segment.sillero" in msg
    assert "stages.1.use" in msg
    assert f"{path}:{line_of(text, 'sillero')}:" in msg
    registry.get("audio.decode")  # fills the registry
    for known in registry.STAGES:
        assert known in msg


def test_missing_stages_and_name(tmp_path):
    msg = error_of(write(tmp_path, "description: nothing here\n"))
    assert "name" in msg and "stages" in msg
    assert "Field required" in msg


def test_empty_stage_list_is_an_error(tmp_path):
    msg = error_of(write(tmp_path, "name: x\nstages: []\n"))
    assert "stages" in msg


def test_invalid_yaml_names_file_and_line(tmp_path):
    text = "name: broken\nstages:\n  - use: audio.decode\n    params: {max_duration_s: 60\n  - use: license.gate\n"
    path = write(tmp_path, text)
    msg = error_of(path)
    assert str(path) in msg and "not valid YAML" in msg
    m = re.search(re.escape(str(path)) + r":(\d+):", msg)
    assert m, msg
    assert 4 <= int(m.group(1)) <= 5  # the unclosed flow mapping (line 4) is found by line 5


def test_invalid_yaml_mapping_value_line(tmp_path):
    text = "name: x\ndescription: ok\nstages: a: b\n"
    path = write(tmp_path, text)
    msg = error_of(path)
    assert f"{path}:3:" in msg


def test_top_level_not_a_mapping(tmp_path):
    msg = error_of(write(tmp_path, "- just\n- a list\n"))
    assert "expected a mapping" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = error_of(path)
    assert str(path) in msg and "no such file" in msg


def test_read_yaml_returns_data_and_node(tmp_path):
    data, node = read_yaml(write(tmp_path, GOOD))
    assert data["name"] == "tiny"
    assert node.start_mark.line == 0


def test_registry_get_unknown_lists_names():
    with pytest.raises(KeyError) as info:
        registry.get("no.such.stage")
    assert "no.such.stage" in str(info.value) and "audio.decode" in str(info.value)


def test_gpu_pipeline_loads():
    """pipelines/granary-gpu.yaml is configuration for GPU machines: it must at least validate here."""
    config, stages = load_pipeline(REPO / "pipelines" / "granary-gpu.yaml")
    by_name = {s.name: s for s in stages}
    assert by_name["asr.whisper"].models_by_lang["default"] == "whisper-large-v3"
    assert by_name["pnc.llm"].resources.gpus == 1 and by_name["translate.llm"].resources.gpus == 1
    assert by_name["asr.whisper"].resources.gpus > 0
