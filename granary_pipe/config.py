"""Pipeline configuration as data: ``pipelines/*.yaml`` validated by pydantic; every error names
the file, the key path (``stages.3.params.beam_size``) and, where the YAML has it, the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from granary_pipe import registry
from granary_pipe.stage import Resources, Stage


class ConfigError(ValueError):
    """A configuration or manifest file that cannot be used; the message names file and key."""


class UnitsConfig(BaseModel):
    """How input is cut into units (the grain of commit and resume)."""

    model_config = ConfigDict(extra="forbid")

    recordings_per_unit: int = Field(default=16, ge=1)
    max_in_flight: int = Field(default=3, ge=1, description="units in flight at once (backpressure)")
    max_attempts: int = Field(default=2, ge=1, description="tries per unit before it is reported failed")


class StageSpec(BaseModel):
    """One entry of ``stages:``: a registry name plus its parameters and engine knobs."""

    model_config = ConfigDict(extra="forbid")

    use: str
    params: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    batch_size: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=1)


class PipelineConfig(BaseModel):
    """A whole pipeline file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    units: UnitsConfig = Field(default_factory=UnitsConfig)
    stages: list[StageSpec] = Field(min_length=1)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node found along ``loc``."""
    line = None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _errors(path: Path, node: yaml.Node | None, err: ValidationError, prefix: tuple = ()) -> str:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(node, loc)
        at = f":{line}" if line else ""
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{path}{at}: {where}: {msg}")
    return "\n".join(lines)


def utf8_error(path: Path, data: bytes, exc: UnicodeDecodeError, first_line: int = 1) -> ConfigError:
    """The error for ``data`` (of ``path``, from line ``first_line``) that is not UTF-8: file, line, column
    (in characters) and value of the first bad byte."""
    line = first_line + data.count(b"\n", 0, exc.start)
    start = data.rfind(b"\n", 0, exc.start) + 1
    column = len(data[start:exc.start].decode("utf-8", errors="replace")) + 1
    return ConfigError(f"{path}:{line}:{column}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                       "save the file as UTF-8")


def read_utf8(path: Path) -> str:
    """The text of ``path`` as UTF-8; a ``ConfigError`` naming file, line and column where it is not."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise utf8_error(path, data, exc) from None


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file, read as it goes, line endings kept; a
    ``ConfigError`` naming file, line and column at a line that is not UTF-8."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise utf8_error(path, raw, exc, lineno) from None


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSON Lines file, read as it goes; a
    ``ConfigError`` naming file, line and column where a line is not UTF-8 or not JSON."""
    for lineno, raw in utf8_lines(path):
        if not raw.strip():
            continue
        try:
            yield lineno, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file; errors name the file and line (and the column of a byte that is not UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    text = read_utf8(path)
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


def build_stage(spec: StageSpec) -> Stage:
    """Instantiate and validate the stage a spec names (raises ValidationError/KeyError)."""
    cls = registry.get(spec.use)
    knobs = {"resources": spec.resources, **spec.model_dump(include={"batch_size", "workers"}, exclude_none=True)}
    if clash := set(spec.params) & set(knobs):
        raise ValueError(f"set {sorted(clash)} beside params, not inside")
    return cls(**spec.params, **knobs)


def load_pipeline(path: Path) -> tuple[PipelineConfig, list[Stage]]:
    """Read and validate a pipeline file and build its stages."""
    path = Path(path)
    data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'name' and 'stages'")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_errors(path, node, err)) from None
    stages = []
    for i, spec in enumerate(config.stages):
        try:
            stages.append(build_stage(spec))
        except KeyError as err:
            line = _line_of(node, ("stages", i, "use"))
            raise ConfigError(f"{path}:{line}: stages.{i}.use: {err.args[0]}") from None
        except ValidationError as err:
            raise ConfigError(_errors(path, node, err, ("stages", i, "params"))) from None
        except ValueError as err:
            line = _line_of(node, ("stages", i))
            raise ConfigError(f"{path}:{line}: stages.{i}: {err}") from None
    return config, stages
