"""Stage option names: bounds are ``min_*``/``max_*``, one name per concept; a name that is no
option is refused naming file, line and key."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from granary_pipe import bundled, registry
from granary_pipe.config import ConfigError, load_pipeline
from granary_pipe.stage import Stage

STAGE_KNOBS = set(Stage.model_fields)


def _option_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every option of a stage (nested option models included), dotted."""
    out = []
    for name, field in model.model_fields.items():
        if prefix == "" and name in STAGE_KNOBS:
            continue
        out.append(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _option_names(ann, f"{prefix}{name}.")
    return out


def _stages() -> list[type[Stage]]:
    registry.get("audio.decode")  # fills the registry
    return list(registry.STAGES.values())


def test_every_bound_is_named_min_or_max_first():
    """``compression_ratio_max`` beside ``max_compression_ratio`` was the defect: a bound is
    ``min_<quantity>`` or ``max_<quantity>``, never ``<quantity>_min``/``<quantity>_max``."""
    wrong = [f"{cls.name}: {opt}" for cls in _stages() for opt in _option_names(cls)
             if re.search(r"(^|_)(min|max)(_|$)", opt.rsplit(".", 1)[-1])
             and not re.match(r"(min|max)_", opt.rsplit(".", 1)[-1])]
    assert wrong == []


def test_a_language_id_model_is_lid_model_in_every_stage():
    """One name per concept: the language-ID model of asr.language_id, asr.two_pass,
    filter.text_lang and the translation filters is ``lid_model`` in all of them."""
    for name in ("asr.language_id", "asr.two_pass", "filter.text_lang", "translate.llm", "translate.whisper"):
        assert "lid_model" in registry.get(name).model_fields, name
    assert "model" not in registry.get("asr.language_id").model_fields
    assert "model" not in registry.get("filter.text_lang").model_fields


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "old.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_a_name_that_is_no_option_is_refused_naming_file_line_and_key(tmp_path):
    path = _write(tmp_path, """\
        name: old
        stages:
          - use: filter.hallucination
            params: {char_rate_max: 33}
        """)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:4: stages.0.params.char_rate_max: unknown key"):
        load_pipeline(path)


def test_a_bundled_pipeline_loads_without_a_warning(caplog):
    for name in ("demo", "granary-gpu", "granary-gpu-1"):
        with caplog.at_level(logging.WARNING, logger="granary_pipe.config"):
            load_pipeline(bundled.pipeline_path(name))
    assert caplog.records == []
