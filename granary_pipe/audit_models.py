"""May a model's outputs go into an open release? Listed by ``granary licenses audit``; ``granary release``
refuses a run they forbid (:func:`check_release_models`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from granary_pipe import licenses


@dataclass(frozen=True)
class Violation:
    """Something that must not go into an open release."""

    kind: str  # "rows" | "model" | "release" | "source"
    name: str
    license: str
    reason: str
    rows: int = 0
    hours: float = 0.0
    stage: str | None = None  # the stage that used the model (models only; None when not recorded)

    def __str__(self) -> str:
        model = f"stage {self.stage}: model {self.name!r}" if self.stage else f"model {self.name!r}"
        what = {"rows": f"{self.rows} kept row(s), {self.hours:.3f} h, of source {self.name!r}",
                "model": model, "release": "release license",
                "source": f"source {self.name!r}"}.get(self.kind, self.name)
        return f"{what} under {self.license}: {self.reason}"


@dataclass
class ModelLine:
    """One model of the run: its license and where that came from (registry, declared, unknown)."""

    name: str
    model_id: str | None
    license: str
    source: str | None = None
    stage: str | None = None


@dataclass(frozen=True)
class _Model:
    name: str
    model_id: str | None
    license: Any  # as recorded: an id, a spelling, or None
    source: str | None = None  # registry | declared | unknown (None when not recorded)
    stage: str | None = None
    param: str | None = None  # the stage parameter that declares its license


def _model_items(model_licenses: Mapping[str, Any]) -> list[_Model]:
    return [_Model(str(name), v.get("model_id"), v.get("license"), v.get("license_source"), v.get("stage"),
                   v.get("license_param")) if isinstance(v, Mapping) else _Model(str(name), None, v)
            for name, v in model_licenses.items()]


def _as_id(raw: Any) -> str:
    raw = None if raw is None else str(raw)
    return raw if raw is not None and licenses.get(raw) is not None else licenses.normalize(raw)


def _declare_hint(m: _Model) -> str:
    if m.param and m.param.endswith("model_licenses"):
        where = f"params.{m.param}: {{{m.name!r}: SPDX-ID}}"
    elif m.param:
        where = f"params.{m.param}: SPDX-ID"
    else:
        return ("give the model by registry name, or declare its license in the stage that uses it "
                "(params.backend.model_license for LLM stages, params.model_licenses: {PATH: SPDX-ID} for "
                "translate stages), an id from licenses/registry.yaml")
    return f"declare it with {where} in that stage (an id from licenses/registry.yaml)"


def audit_models(model_licenses: Mapping[str, Any]) -> list[Violation]:
    """Violations for models whose license forbids releasing their outputs (not compliant, or unknown),
    each saying what to change. ``model_licenses``: ``run.json["models"]``, or name -> license string."""
    out = []
    for m in _model_items(model_licenses):
        spdx = _as_id(m.license)
        reason = licenses.why_not(spdx)
        if reason is None:
            continue
        if spdx == licenses.UNKNOWN:
            how = "no license declared" if m.source == "unknown" else "unknown license"
            reason = f"{how}: {_declare_hint(m)}"
        else:
            reason = f"{reason}: its outputs cannot go into an open release (use a model whose license allows it)"
        shown = spdx if m.license is not None else "unknown (not recorded)"
        out.append(Violation("model", m.name, shown, reason, stage=m.stage))
    return out


def check_release_models(run_dir: Path, run: Mapping[str, Any]) -> None:
    """Raise a one-line ValueError naming each model of the run that forbids a release and what to change."""
    violations = audit_models(run.get("models") or {})
    if violations:
        raise ValueError(f"{run_dir}: release refused: " + "; ".join(map(str, violations))
                         + f" (then `granary licenses audit {run_dir}` checks it)")


def model_lines(model_licenses: Mapping[str, Any]) -> list[ModelLine]:
    """One line per model of ``run.json``'s ``models`` (a describe record or a bare license), with its
    license as a row license (a registry id, an SPDX expression or a verdict)."""
    return [ModelLine(m.name, m.model_id, _as_id(m.license), m.source, m.stage) for m in _model_items(model_licenses)]
