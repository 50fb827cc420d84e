"""release.json's dict, from the rows a release selected and the files its formats wrote; nothing private
goes in (no local paths, cache directories or server addresses).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from granary_pipe import __version__, models
from granary_pipe.io.formats import RELEASE_FORMATS
from granary_pipe.io.shards import brace_patterns
from granary_pipe.io.verify import sha256_file
from granary_pipe.rundir import run_sources, unit_errors

FORMAT_VERSION = 3  # release.json's layout (history: CHANGELOG.md)
_LOCATION_KEYS = ("manifest", "audio", "listing", "url")


@dataclass
class Written:
    """What the format writers produced: one entry per file, and counts per language, license and source."""

    shards: list[dict[str, Any]] = field(default_factory=list)
    per_lang: dict[str, dict[str, Any]] = field(default_factory=dict)  # rows, seconds per shard, shards, bytes
    licenses: Counter[str] = field(default_factory=Counter)
    by_source: dict[Any, dict[str, list]] = field(default_factory=dict)  # source -> license -> [rows, seconds]


def file_entry(root: Path, rel: str, fmt: str, lang: str | None, rows: int, seconds: float) -> dict[str, Any]:
    """release.json's entry of the file ``root/rel``: path, format, lang, sha256, bytes, rows, hours."""
    path = root / rel
    return {"path": rel, "format": fmt, "lang": lang, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "rows": rows, "hours": round(seconds / 3600, 6)}


def public_source(src: dict[str, Any]) -> dict[str, Any]:
    """A run.json source as release.json shows it: the manifest by file name, a local location
    that is absolute or climbs with ``..`` by its last name (remote URLs and plain relative globs
    stay), no ``reader_options.cache_dir`` (where the curator's cache lives)."""
    out = dict(src)
    for key in _LOCATION_KEYS:
        value = out.get(key)
        if not isinstance(value, str):
            continue
        scheme = re.match(r"^([a-z][a-z0-9+.\-]*)://", value, re.I)
        if scheme and scheme[1].lower() != "file":
            continue  # a remote URL: public by nature
        local = value[len(scheme[0]):] if scheme else value
        if key == "manifest" or local.startswith(("/", "~")) or ".." in Path(local).parts:
            out[key] = Path(local).name
    opts = out.get("reader_options")
    if isinstance(opts, dict) and "cache_dir" in opts:
        out["reader_options"] = {k: v for k, v in opts.items() if k != "cache_dir"}
    return out


def run_provenance(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """What release.json keeps of run.json besides the pipeline config and the models."""
    pipeline_file = run.get("pipeline_file")
    return {
        "name": run_dir.resolve().name,
        "fingerprint": run.get("fingerprint"),
        "git_revision": run.get("git_revision"),
        "granary_pipe": run.get("granary_pipe") or (run.get("versions") or {}).get("granary_pipe"),
        "executor": run.get("executor"),
        "pipeline_file": Path(pipeline_file).name if pipeline_file else None,
        "versions": run.get("versions"),
        "stage_info": run.get("stage_info"),
        "units_failed": sorted(unit_errors(run)),
    }


def _sources(run: dict[str, Any], by_source: dict[Any, dict[str, list]]) -> list[dict[str, Any]]:
    sources = []
    for src in run_sources(run):
        per = by_source.get(src.get("name"), {})
        sources.append({**public_source(src), "release": {
            "rows": sum(c[0] for c in per.values()),
            "hours": round(math.fsum(c[1] for c in per.values()) / 3600, 6),
            "licenses": {lic: c[0] for lic, c in sorted(per.items())},
        }})
    return sources


def _totals(per_lang: dict[str, dict[str, Any]], formats: tuple[str, ...]) -> dict[str, Any]:
    total_s = math.fsum(s for v in per_lang.values() for s in v["seconds"])
    return {
        "rows": sum(v["rows"] for v in per_lang.values()),
        "hours": round(total_s / 3600, 6),
        "bytes": {fmt: sum(v["bytes"].get(fmt, 0) for v in per_lang.values()) for fmt in formats},
        "per_lang": {
            lang: {
                "rows": v["rows"],
                "hours": round(math.fsum(v["seconds"]) / 3600, 6),
                "shards": v["shards"],
                "bytes": {fmt: v["bytes"].get(fmt, 0) for fmt in formats},
            }
            for lang, v in sorted(per_lang.items())
        },
    }


def release_metadata(run_dir: Path, run: dict[str, Any], written: Written, *, formats: tuple[str, ...],
                     release_license: str | None, sharding: dict[str, Any],
                     excluded: dict[str, dict[str, int]]) -> dict[str, Any]:
    """release.json's dict, without its ``files`` (ATTRIBUTION.md and README.md are written from it).
    ``sharding``: seed, shard_rows, shard_bytes, langs; ``excluded``: rows left out by_license and by_lang."""
    release = {
        "format_version": FORMAT_VERSION,
        "created_from": run_dir.resolve().name,
        "granary_pipe_version": __version__,
        "release_license": release_license,
        "formats": list(formats),
        "sharding": {**sharding, "naming": {fmt: RELEASE_FORMATS[fmt].naming() for fmt in formats}},
        "shards": sorted(written.shards, key=lambda e: e["path"]),
        "files": [],
        "totals": _totals(written.per_lang, formats),
        "licenses": dict(sorted(written.licenses.items())),
        "excluded": {k: dict(sorted(v.items())) for k, v in excluded.items()},
        "sources": _sources(run, written.by_source),
        "config": run.get("pipeline"),
        "models": models.public(run.get("models") or {}),  # made the labels and translations; no paths
        "run": run_provenance(run_dir, run),
    }
    if "nemo" in formats:
        release["nemo"] = {lang: brace_patterns(f"nemo/{lang}", v["shards"])
                           for lang, v in sorted(written.per_lang.items())}
    return release
