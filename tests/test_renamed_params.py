"""Stage option names: bounds are ``min_*``/``max_*``, one name per concept, and the old names of
renamed options still load for one release with a warning naming file, line, old and new key."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import BaseModel

from granary_pipe import bundled, registry
from granary_pipe.config import ConfigError, load_pipeline
from granary_pipe.listing import fingerprint as _fingerprint
from granary_pipe.pipeline import resolved_config
from granary_pipe.stage import Stage
from granary_pipe.stages.filters.hallucination import HallucinationFilter

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


def test_renamed_tables_point_from_no_option_to_an_option():
    for cls in _stages():
        options = set(_option_names(cls))
        for old, new in cls.RENAMED.items():
            assert old not in options, f"{cls.name}: {old} is still an option"
            assert new is None or new in options, f"{cls.name}: {old} → {new}, which is no option"


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "old.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


OLD = """\
name: old-names
stages:
  - use: filter.hallucination
    params:
      char_rate_max: 33
      avg_logprob_min: -0.7
  - use: asr.two_pass
    params:
      redecode: {piece_s: 10}
      resolve:
        text_min_prob: 0.6
  - use: translate.whisper
    params: {qe_model: null, lid_min_prob: 0.4}
"""


def test_old_keys_load_as_the_new_ones_with_a_warning_naming_file_line_and_both_keys(tmp_path, caplog):
    path = _write(tmp_path, OLD)
    with caplog.at_level(logging.WARNING, logger="granary_pipe.config"):
        _, (hall, asr, tr) = load_pipeline(path)
    assert (hall.max_chars_per_s, hall.min_avg_logprob) == (33, -0.7)
    assert (asr.redecode.max_piece_s, asr.resolve.min_text_prob) == (10, 0.6)
    assert tr.min_lid_prob == 0.4
    lines = [r.getMessage() for r in caplog.records]
    assert f"{path}:5: stages.0.params: char_rate_max is now max_chars_per_s" in lines[0]
    assert f"{path}:6: stages.0.params: avg_logprob_min is now min_avg_logprob" in lines[1]
    assert any(f"{path}:9: stages.1.params: redecode.piece_s is now redecode.max_piece_s" in m for m in lines)
    assert any(f"{path}:11: stages.1.params: resolve.text_min_prob is now resolve.min_text_prob" in m
               for m in lines)
    assert any(f"{path}:13: stages.2.params: qe_model is removed" in m for m in lines)
    assert len(lines) == 6
    assert all("until the next release" in m for m in lines)


def test_old_and_new_name_together_is_an_error_naming_both(tmp_path):
    path = _write(tmp_path, """\
        name: both
        stages:
          - use: filter.hallucination
            params: {char_rate_max: 30, max_chars_per_s: 40}
        """)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:3: stages.0: char_rate_max and "
                                          r"max_chars_per_s both given"):
        load_pipeline(path)


def test_a_removed_option_with_a_value_is_still_refused(tmp_path):
    path = _write(tmp_path, """\
        name: qe
        stages:
          - use: translate.whisper
            params: {qe_model: Unbabel/wmt22-cometkiwi-da}
        """)
    with pytest.raises(ConfigError, match=r":4: stages.0.params.qe_model: unknown key"):
        load_pipeline(path)


def test_old_keys_work_from_python_too(caplog):
    with caplog.at_level(logging.WARNING, logger="granary_pipe.config"):
        stage = HallucinationFilter(compression_ratio_max=2.0)
    assert stage.max_compression_ratio == 2.0
    assert "filter.hallucination: compression_ratio_max is now max_compression_ratio" in caplog.text


@pytest.mark.parametrize("name", ["demo", "granary-gpu", "granary-gpu-1"])
def test_bundled_pipelines_use_the_new_names(name, caplog):
    with caplog.at_level(logging.WARNING, logger="granary_pipe.config"):
        load_pipeline(bundled.pipeline_path(name))
    assert caplog.records == []


# Fingerprints the release before the renames computed for the bundled pipelines (same values,
# old names) over a two-row listing: a run it started must stay resumable.
BEFORE = {
    "demo": "589ec1f7b3e70ffbd28b64ecf7983ad0cf7211025f55ec065bdc8854dde056c8",
    "granary-gpu-1": "003c22312c2ddb08abe263043ff317cbcd482d88aa4a60def5a00df3e3139ae4",
    "granary-gpu": "14c0bdeee3f2dfbe52308c7be124e0ad3c6ed87b75c8286ddf0e9c7f2526bba1",
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_the_run_fingerprint_survives_the_renames(name):
    config, stages = load_pipeline(bundled.pipeline_path(name))
    listing = pa.table({"id": ["a", "b"], "lang_hint": ["en", None]})
    assert _fingerprint(resolved_config(config, stages), listing) == BEFORE[name]
