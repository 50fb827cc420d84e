"""The source catalog (``manifests/catalog/*.yaml``, a source manifest with a ``catalog:`` block per open
corpus): loaded and checked, rendered by ``granary sources``, read for ``ATTRIBUTION.md``. Design: docs/sources.md."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from granary_pipe import licenses
from granary_pipe.config import ConfigError
from granary_pipe.ingest.source import CatalogInfo, SourceManifest, load_manifest
from granary_pipe.report import fmt


def catalog_dir() -> Path:
    """``$GRANARY_CATALOG``, else ``manifests/catalog`` (shipped in the package as ``_data/catalog``)."""
    env = os.environ.get("GRANARY_CATALOG")
    return Path(env) if env else Path(__file__).parent / "_data" / "catalog"


@dataclass(frozen=True)
class CatalogEntry:
    path: Path
    manifest: SourceManifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def info(self) -> CatalogInfo:
        assert self.manifest.catalog is not None
        return self.manifest.catalog

    @property
    def license(self) -> str:
        """The corpus license as a row license: a registry id, an SPDX expression, or a verdict such as ``unknown``."""
        return licenses.normalize(self.manifest.license, self.manifest.license_map)

    @property
    def compliant(self) -> bool:
        return licenses.allows_release(self.license)

    @property
    def hours(self) -> float:
        return self.info.hours.resolved_total()


def load_entry(path: Path) -> CatalogEntry:
    """One catalog manifest; ConfigError when it has no ``catalog:`` block."""
    manifest = load_manifest(Path(path))
    if manifest.catalog is None:
        raise ConfigError(f"{path}: not a catalog entry (no 'catalog:' block)")
    return CatalogEntry(Path(path), manifest)


def load_catalog(directory: Path | None = None) -> list[CatalogEntry]:
    """Every ``*.yaml`` under ``directory`` (default :func:`catalog_dir`), sorted by name."""
    directory = Path(directory) if directory is not None else catalog_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"catalog directory not found: {directory}")
    entries = [load_entry(p) for p in sorted(directory.glob("*.yaml"))]
    seen: dict[str, Path] = {}
    for e in entries:
        if e.name in seen:
            raise ConfigError(f"{e.path}: catalog name {e.name!r} also used by {seen[e.name]}")
        seen[e.name] = e.path
    for e in entries:
        for ref in [*e.info.derived_from, *e.info.overlaps]:
            if ref not in seen:
                raise ConfigError(f"{e.path}: refers to {ref!r}, which is not a catalog entry")
    return sorted(entries, key=lambda e: e.name)


def find(name: str, directory: Path | None = None) -> CatalogEntry | None:
    """The catalog entry named ``name``, or None (also when there is no catalog)."""
    try:
        entries = load_catalog(directory)
    except (FileNotFoundError, ConfigError):
        return None
    return next((e for e in entries if e.name == name), None)


# ----------------------------------------------------------------------------- granary sources

def _fmt_langs(langs: list[str], width: int = 6) -> str:
    if len(langs) <= width:
        return ",".join(langs)
    return f"{len(langs)}: {','.join(langs[:4])},…"


def hours_in(entry: CatalogEntry, langs: list[str]) -> float | None:
    """Published hours of ``entry`` in ``langs``; None when it publishes only a total over these and
    other languages."""
    info = entry.info
    chosen = [lang for lang in info.languages if lang in set(langs)]
    if not chosen:
        return 0.0
    if set(info.languages) <= set(langs):
        return entry.hours
    if all(lang in info.hours.by_lang for lang in chosen):
        return math.fsum(info.hours.by_lang[lang] for lang in chosen)
    return None


def sources_rows(entries: list[CatalogEntry], langs: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per entry (``granary sources --json``); with ``langs`` also ``hours_in_langs``."""
    rows = []
    for e in entries:
        conf = e.info.confirmed
        rows.append({
            "corpus": e.name,
            "languages": list(e.info.languages),
            "hours": e.hours,
            **({"hours_in_langs": hours_in(e, langs)} if langs else {}),
            "hours_by_lang": dict(e.info.hours.by_lang),
            "license": e.license,
            "compliant": e.compliant,
            "labelled": e.info.labelled,
            "reader": e.manifest.reader,
            "derived_from": list(e.info.derived_from),
            "confirmed": sum(conf.values()),
            "facts": len(conf),
            "unconfirmed": e.info.unconfirmed(),
        })
    return rows


def format_sources(rows: list[dict[str, Any]], langs: list[str] | None = None) -> str:
    """The ``granary sources`` table; with ``langs`` (``--lang``) a column and a total of the hours in them."""
    header = ["corpus", "languages", "hours", "license", "compliant", "labelled", "confirmed"]
    body = [[r["corpus"], _fmt_langs(r["languages"]), fmt.rounded_hours(r["hours"]), r["license"],
             "yes" if r["compliant"] else "NO", "yes" if r["labelled"] else "no",
             f"{r['confirmed']}/{r['facts']}"] for r in rows]
    counted = [r for r in rows if r["compliant"] and not r["derived_from"]]
    note = ("not counting entries that re-label another entry's audio (derived_from). "
            "'confirmed' = facts checked on the corpus's own pages.")
    if not langs:
        total = math.fsum(r["hours"] for r in counted)
        foot = f"\n{len(rows)} corpora; {fmt.rounded_hours(total)} h of compliant audio {note}"
        return fmt.plain_table(header, body, right={2}) + foot
    chosen = ",".join(langs)
    header.insert(3, f"hours {chosen}")
    for line, r in zip(body, rows, strict=True):
        line.insert(3, fmt.rounded_hours(r["hours_in_langs"]))
    total = math.fsum(r["hours_in_langs"] for r in counted if r["hours_in_langs"] is not None)
    unknown = [r["corpus"] for r in counted if r["hours_in_langs"] is None]
    foot = f"\n{len(rows)} corpora; {fmt.rounded_hours(total)} h of compliant audio in {chosen} {note}"
    if unknown:
        foot += (f"\nNot counted ('-': only a total over all their languages is published): "
                 f"{', '.join(unknown)}.")
    return fmt.plain_table(header, body, right={2, 3}) + foot


# ----------------------------------------------------------------------------- attribution

def attribution_info(source: dict[str, Any], directory: Path | None = None) -> dict[str, Any]:
    """A run's source dict completed with the homepage, citation and license evidence of its ``catalog``
    block or of the catalog entry of its ``name``."""
    out = dict(source)
    info = source.get("catalog") if isinstance(source.get("catalog"), dict) else None
    entry = None
    if info is None and source.get("name"):
        entry = find(str(source["name"]), directory)
        if entry is not None:
            info = entry.info.model_dump()
    if info is None:
        return out
    if entry is not None:
        out["homepage"] = entry.manifest.homepage or out.get("homepage")
        out["citation"] = entry.manifest.citation or out.get("citation")
        out["catalog_license"] = entry.license
    out["license_evidence"] = info.get("license_evidence")
    out["unconfirmed"] = [f for f, ok in (info.get("confirmed") or {}).items() if not ok]
    return out
