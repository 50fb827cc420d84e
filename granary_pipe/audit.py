"""License audit of a manifest, a catalog, a run or a release (``granary licenses audit``): a compliance
matrix, models, license parses, notes and violations (exit code 1). Design: docs/sources.md,
"`granary licenses audit`"."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from granary_pipe import licenses
from granary_pipe.audit_models import ModelLine, Violation, audit_models, model_lines
from granary_pipe.report.totals import collect, kept_rejected
from granary_pipe.rundir import read_run_json


@dataclass
class LicenseLine:
    source: str
    license: str
    rows_kept: int | None = 0
    seconds_kept: float | None = 0.0
    rows_rejected: int | None = 0
    seconds_rejected: float | None = 0.0


@dataclass
class AuditReport:
    kind: str  # "manifest" | "catalog" | "run" | "release"
    path: str
    release_license: str | None = None
    lines: list[LicenseLine] = field(default_factory=list)
    models: list[ModelLine] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parses: list[str] = field(default_factory=list)  # licenses.explain of each string, one line each

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


# ----------------------------------------------------------------------------- rows

def _release_reason(license: str, release_license: str | None) -> str | None:
    reason = licenses.why_not(license)
    if reason is None and release_license and licenses.get(release_license) is not None \
            and not licenses.compatible(license, release_license):
        reason = f"cannot go into a {release_license} release"
    return reason


def _row_violations(lines: list[LicenseLine], release_license: str | None) -> list[Violation]:
    reasons = ((ln, _release_reason(ln.license, release_license)) for ln in lines if ln.rows_kept)
    return [Violation("rows", ln.source, ln.license, reason, ln.rows_kept or 0, (ln.seconds_kept or 0.0) / 3600)
            for ln, reason in reasons if reason is not None]


def _parses(lines: list[LicenseLine]) -> list[str]:
    return [licenses.explain(lic, row=True) for lic in sorted({ln.license for ln in lines})
            if licenses.get(lic) is None]


def _release_license_violation(release_license: str | None) -> list[Violation]:
    if release_license is None:
        return []
    reason = licenses.why_not(release_license)
    return [Violation("release", "release", release_license, reason)] if reason else []


def _judge(report: AuditReport, models: Mapping[str, Any]) -> None:
    """Fill in the report's parses, models and violations from its lines and ``run.json``'s ``models``."""
    report.parses = _parses(report.lines)
    report.models = model_lines(models)
    report.violations = (_release_license_violation(report.release_license)
                         + _row_violations(report.lines, report.release_license) + audit_models(models))


def _matrix(groups: Iterable[dict[str, Any]]) -> list[LicenseLine]:
    """Matrix lines, sorted, from groups with ``source``, ``license``, ``kept``, ``n`` rows and ``secs``."""
    by = kept_rejected(groups, lambda g: (g["source"] or "(no source)", g["license"] or licenses.UNKNOWN))
    return [LicenseLine(src, lic, *counts) for (src, lic), counts in by.items()]


def audit_run(run_dir: Path, release_license: str | None = None) -> AuditReport:
    """Audit the committed units of a run directory from their digests (no row is read)."""
    run_dir = Path(run_dir)
    run = read_run_json(run_dir)
    report = AuditReport("run", str(run_dir), release_license)
    totals = collect(run_dir)
    report.lines = _matrix(totals.group_rows())
    if not totals.units:
        report.notes.append("no committed unit: nothing was kept yet")
    _judge(report, run.get("models") or {})
    gated = sum(ln.rows_rejected or 0 for ln in report.lines if licenses.why_not(ln.license))
    if gated:
        report.notes.append(f"{gated} rejected row(s) are under non-compliant or unknown licenses "
                            "(rejected by the gate; not released)")
    return report


def audit_release(rel_dir: Path, release_license: str | None = None) -> AuditReport:
    """Audit a release directory (rows and hours from a DuckDB scan of its Parquet shards)."""
    from granary_pipe.report.scan import shard_groups  # DuckDB, only for a release

    rel_dir = Path(rel_dir)
    path = rel_dir / "release.json"
    if not path.is_file():
        raise FileNotFoundError(f"not a release directory: {path} does not exist")
    rel = json.loads(path.read_text(encoding="utf-8"))
    release_license = release_license or rel.get("release_license")
    report = AuditReport("release", str(rel_dir), release_license)
    shards = [s for s in rel.get("shards", []) if s.get("format") == "parquet"]
    missing = [s["path"] for s in shards if not (rel_dir / s["path"]).is_file()]
    if shards and not missing:
        report.lines = _matrix({**g, "kept": True} for g in shard_groups([str(rel_dir / s["path"]) for s in shards]))
    else:
        if missing:
            report.notes.append(f"{len(missing)} Parquet shard(s) missing (e.g. {missing[0]}): rows from release.json, "
                                "hours unknown")
        report.lines = [LicenseLine("(all sources)", lic, int(n), None, None, None)
                        for lic, n in sorted((rel.get("licenses") or {}).items())]
    if rel.get("models") is None:
        report.notes.append("release.json records no models: "
                            "model licenses not checked; audit the run directory instead")
    _judge(report, rel.get("models") or {})
    return report


def audit_manifest(manifest_path: Path, release_license: str | None = None) -> AuditReport:
    """Audit a source manifest: its corpus license and, for a runnable one, each file's license."""
    from granary_pipe.ingest.readers import read_entries
    from granary_pipe.ingest.source import load_manifest

    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    report = AuditReport("manifest", str(manifest_path), release_license)
    lmap = manifest.license_map
    default = licenses.normalize(manifest.license, lmap)
    hours = manifest.catalog.hours.resolved_total() if manifest.catalog else None
    report.violations += _release_license_violation(release_license)
    reason = _release_reason(default, release_license)
    if reason is not None:
        report.violations.append(Violation("source", manifest.name, default, f"corpus license: {reason}"))
    if licenses.parse(manifest.license, lmap).mapped:
        report.notes.append(f"license {manifest.license!r} is read as {default} (license_map)")
    elif default != manifest.license and default not in licenses.VERDICTS:
        report.notes.append(f"license {manifest.license!r} normalises to {default}: write the registry id")
    if not manifest.runnable:
        report.lines = [LicenseLine(manifest.name, default, None, None if hours is None else hours * 3600, None, None)]
        report.parses = [licenses.explain(manifest.license, lmap)] if default != manifest.license else []
        report.notes.append("catalog entry (no local copy): hours are the published ones; rows unknown")
        return report
    counts: dict[str, int] = defaultdict(int)
    raw_of: dict[str, set[str]] = defaultdict(set)
    for e in read_entries(manifest, manifest_path, materialize=False):
        raw = e.license if e.license is not None else manifest.license
        spdx = licenses.normalize(raw, lmap)
        counts[spdx] += 1
        raw_of[spdx].add(raw)
    raws = sorted({r for rs in raw_of.values() for r in rs}, key=str)
    report.parses = [licenses.explain(r, lmap) for r in raws if licenses.normalize(r, lmap) != r
                     or licenses.get(r) is None]
    for spdx in sorted(counts):
        report.lines.append(LicenseLine(manifest.name, spdx, counts[spdx], None, None, None))
        why = licenses.why_not(spdx)
        if spdx in licenses.VERDICTS:
            what = "unrecognised" if spdx == licenses.UNKNOWN else spdx.replace("_", " ")
            report.violations.append(Violation("source", manifest.name, spdx,
                                               f"{counts[spdx]} file(s) under {what} license string(s) "
                                               f"{sorted(raw_of[spdx], key=str)[:3]}: {why}", counts[spdx]))
        elif why is not None and spdx != default:
            report.notes.append(f"{counts[spdx]} file(s) under {spdx} ({why}) will be rejected by the license gate")
    return report


def audit_catalog(directory: Path, release_license: str | None = None) -> AuditReport:
    """Audit every manifest in a directory (e.g. ``manifests/catalog``)."""
    directory = Path(directory)
    report = AuditReport("catalog", str(directory), release_license)
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.yaml manifests")
    report.violations += _release_license_violation(release_license)
    for f in files:
        sub = audit_manifest(f, release_license)
        report.lines += sub.lines
        report.violations += [v for v in sub.violations if v.kind != "release"]
        report.notes += [f"{f.name}: {n}" for n in sub.notes if not n.startswith("catalog entry")]
        report.parses += [f"{f.name}: {p}" for p in sub.parses]
    return report


def audit_path(path: Path, release_license: str | None = None) -> AuditReport:
    """Audit a run directory, a release directory, a manifest or a directory of manifests."""
    path = Path(path)
    if path.is_dir():
        if (path / "run.json").is_file():
            return audit_run(path, release_license)
        if (path / "release.json").is_file():
            return audit_release(path, release_license)
        return audit_catalog(path, release_license)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return audit_manifest(path, release_license)
    if path.name in ("run.json", "release.json"):
        return audit_path(path.parent, release_license)
    raise FileNotFoundError(f"{path}: not a run directory, release directory or manifest")


# ----------------------------------------------------------------------------- rendering

def _terms(license: str) -> str:
    entry = licenses.get(license)
    return entry.flags() if entry else "?"


def format_report(report: AuditReport) -> str:
    """The report as ``granary audit`` prints it: the license matrix, models, violations and notes."""
    from granary_pipe.report.fmt import count, hours_of
    from granary_pipe.report.fmt import plain_table as _table

    out = [f"license audit of {report.kind} {report.path}",
           f"release license: {report.release_license or 'not set (compliance only)'}", ""]
    body = []
    for ln in report.lines:
        why = licenses.reason(ln.license)
        body.append([ln.source, ln.license, "yes" if why is None else "NO", "-" if why is None else f"license:{why}",
                     _terms(ln.license), count(ln.rows_kept), hours_of(ln.seconds_kept),
                     count(ln.rows_rejected), hours_of(ln.seconds_rejected)])
    kept_name = "files" if report.kind in ("manifest", "catalog") else "kept"
    out.append(_table(["source", "license", "compliant", "gate reason", "terms", f"{kept_name} rows",
                       f"{kept_name} h", "rejected rows", "rejected h"], body, right={5, 6, 7, 8})
               if body else "(no rows)")
    if report.parses:
        out += ["", "license parse:", *[f"  {p}" for p in report.parses]]
    if report.models:
        rows = [[m.name, m.stage or "-", m.model_id or "-", m.license, m.source or "-",
                 "yes" if licenses.allows_release(m.license) else "NO", _terms(m.license)] for m in report.models]
        out += ["", _table(["model", "stage", "model id", "license", "license from", "compliant", "terms"], rows)]
    if report.notes:
        out += ["", *[f"note: {n}" for n in report.notes]]
    total_kept = math.fsum(ln.seconds_kept or 0.0 for ln in report.lines)
    out.append("")
    if report.violations:
        out.append(f"{len(report.violations)} violation(s):")
        out += [f"  - {v}" for v in report.violations]
    else:
        kept = f" ({hours_of(total_kept)} h kept)" if report.kind in ("run", "release") else ""
        out.append(f"OK: no violation{kept}")
    return "\n".join(out)


def to_json(report: AuditReport) -> str:
    violations = [{**asdict(v), "message": str(v)} for v in report.violations]
    return json.dumps({**asdict(report), "ok": report.ok, "violations": violations}, indent=2, sort_keys=True,
                      default=str)
