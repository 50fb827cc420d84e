"""What a pipeline file can say (``granary stages``, ``--json``: a JSON Schema an editor validates
``pipelines/*.yaml`` with), read from the same pydantic models that validate a pipeline at load
time, so it cannot drift from what :func:`granary_pipe.config.load_pipeline` accepts."""

from __future__ import annotations

import copy
import inspect
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from granary_pipe import registry
from granary_pipe.config import PipelineConfig
from granary_pipe.stage import Resources

KNOBS = ("resources", "batch_size", "workers")
"""Stage fields set beside ``params`` in a pipeline file, not inside it."""


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None").replace("<class '", "").replace("'>", "")


def _default(field: Any) -> Any:
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def stage_reference(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Every stage (or ``names``): name, summary, whether it holds a model, its parameters, knob
    defaults and its ``RULES``; KeyError naming the known stages for an unknown name."""
    for name in names or []:
        registry.get(name)  # KeyError naming the known stages
    out = []
    for name, cls in registry.all_stages().items():
        if names and name not in names:
            continue
        doc = inspect.getdoc(cls) or ""
        params = [{"name": f, "type": _type_name(info.annotation), "default": _default(info),
                   "description": info.description or ""}
                  for f, info in cls.model_fields.items() if f not in KNOBS]
        knobs = {k: _default(cls.model_fields[k]) for k in KNOBS}
        out.append({"name": name, "summary": doc.split("\n\n")[0].replace("\n", " "), "actor": cls.actor,
                    "params": params, "knobs": knobs, "rules": list(cls.RULES)})
    return out


def format_stages(reference: list[dict[str, Any]]) -> str:
    """The reference as text: one block per stage, one line per parameter."""
    blocks = []
    for s in reference:
        kind = "model stage (long-lived workers)" if s["actor"] else "CPU stage (tasks)"
        knobs = ", ".join(f"{k}: {v}" for k, v in s["knobs"].items() if k != "resources")
        lines = [f"{s['name']}  [{kind}; {knobs}]", f"  {s['summary']}"]
        if s.get("rules"):
            lines.append(f"  rules: {', '.join(s['rules'])}")
        width = max([len(p["name"]) for p in s["params"]] + [4])
        for p in s["params"]:
            lines.append(f"    {p['name']:<{width}}  {p['type']} = {p['default']!r}")
            if p["description"]:
                lines.append(f"    {'':<{width}}    {p['description']}")
        if not s["params"]:
            lines.append("    (no parameters)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n\nBeside params every stage takes resources: {cpus, gpus, custom}, batch_size "
                                  "and workers (model stages). JSON Schema: granary stages --json")


def pipeline_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a pipeline file: top-level keys, and per ``use:`` its ``params``."""
    stages = registry.all_stages()
    classes: list[type[BaseModel]] = [PipelineConfig, Resources, *stages.values()]
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [(c, "validation") for c in classes]
    keys, top = models_json_schema(models, ref_template="#/$defs/{model}")
    defs = top["$defs"]
    ref = {cls: keys[(cls, "validation")]["$ref"].rsplit("/", 1)[-1] for cls, _ in models}
    branches = []
    for name, cls in stages.items():
        params = copy.deepcopy(defs[ref[cls]])
        for knob in KNOBS:
            params.get("properties", {}).pop(knob, None)
        params["additionalProperties"] = False
        params_name = f"params.{name}"
        defs[params_name] = params
        branches.append({"if": {"properties": {"use": {"const": name}}, "required": ["use"]},
                         "then": {"properties": {"params": {"$ref": f"#/$defs/{params_name}"}}}})
    for cls in stages.values():  # the stage models themselves are only reached through params.* now
        defs.pop(ref[cls], None)
    pipeline = defs.pop(ref[PipelineConfig])
    spec_name = pipeline["properties"]["stages"]["items"]["$ref"].rsplit("/", 1)[-1]
    spec = defs[spec_name]
    spec["properties"]["use"] = {"enum": list(stages), "description": "registry name of the stage"}
    spec["allOf"] = branches
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://github.com/granary-pipe/granary_pipe/pipeline.schema.json",
            "title": "granary_pipe pipeline", **pipeline, "$defs": defs}
