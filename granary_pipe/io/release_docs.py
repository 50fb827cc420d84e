"""The human-readable files of a release: ``ATTRIBUTION.md`` (per source: license, evidence, homepage,
citation, counts; the models used) and ``README.md`` (a Hugging Face dataset card).
"""

from __future__ import annotations

from typing import Any

from granary_pipe import __version__, licenses
from granary_pipe.io.formats import RELEASE_FORMATS

_HF_LICENSES = {  # SPDX id -> the dataset card's license (others: other + license_name)
    "CC0-1.0": "cc0-1.0", "CC-BY-3.0": "cc-by-3.0", "CC-BY-4.0": "cc-by-4.0", "CC-BY-SA-3.0": "cc-by-sa-3.0",
    "CC-BY-SA-4.0": "cc-by-sa-4.0", "MIT": "mit", "Apache-2.0": "apache-2.0", "PDDL-1.0": "pddl",
    "CC-BY-NC-4.0": "cc-by-nc-4.0", "CC-BY-NC-SA-4.0": "cc-by-nc-sa-4.0", "CC-BY-ND-4.0": "cc-by-nd-4.0",
    "CC-BY-NC-ND-4.0": "cc-by-nc-nd-4.0"}


def _source_said(src: dict) -> dict[str, list[str]]:
    """Row license -> the strings the source wrote that its manifest's ``license_map`` reads as it."""
    said: dict[str, list[str]] = {}
    for raw, spdx in sorted((src.get("license_map") or {}).items()):
        said.setdefault(str(spdx), []).append(f'"{raw}"')
    return said


def _license_lines(src: dict) -> list[str]:
    """``- License:`` of a source: as its manifest gives it; where ``license_map`` reads a string
    of the source as a versioned license, the mapped license next to what the source said."""
    raw = src.get("license")
    lmap = src.get("license_map") or {}
    if not raw:
        return ["- License: not given"]
    parsed = licenses.parse(raw, lmap)
    out = [f"- License: {raw}" if not parsed.mapped else
           f'- License: {parsed.license} (the source says "{raw}"; read as {parsed.license} by the license_map '
           "of its manifest)"]
    out += [f'- The source\'s "{k}" is read as {v} (license_map of its manifest)'
            for k, v in sorted(lmap.items()) if not any(k == a for a, _ in parsed.mapped)]
    return out


def attribution_md(run_name: str, release_license: str | None, sources: list[dict], counts: dict,
                   models: dict[str, dict] | None = None) -> str:
    """ATTRIBUTION.md; ``counts[source][license] = [rows, seconds]``. A source in the catalog (by name, or
    with a ``catalog`` block) gets the catalog's homepage, citation and license evidence."""
    from granary_pipe import catalog

    lines = [
        "# Attribution",
        "",
        f"This release was built by granary_pipe {__version__} from run `{run_name}`.",
        f"Release license: {release_license or 'not set (see each source below)'}.",
        "",
    ]
    listed = [s.get("name") for s in sources]
    extra = sorted(k for k in counts if k not in listed)
    entries = [catalog.attribution_info(s) for s in sources] + [{"name": k} for k in extra]
    for src in entries:
        name = src.get("name") or "(unnamed source)"
        lines += [f"## {name}", ""]
        lines += _license_lines(src)
        if evidence := src.get("license_evidence"):
            lines.append(f"- License evidence: {evidence['url']} (\"{evidence['quote']}\")")
        if src.get("unconfirmed"):
            lines.append(f"- Not confirmed on the corpus's own pages: {', '.join(src['unconfirmed'])}")
        lines.append(f"- Homepage: {src.get('homepage') or 'not given'}")
        cite = (src.get("citation") or "").strip()
        lines += ["- Citation:", "", "```", cite, "```"] if cite else ["- Citation: not given"]
        lines += ["", "| License | Rows | Hours |", "|---|---:|---:|"]
        per = counts.get(src.get("name"), {})
        said = _source_said(src)
        for lic, (rows, secs) in sorted(per.items()):
            hours = f"{secs / 3600:.3f}" if secs == 0 or secs >= 1.8 else "<0.001"
            cited = f" (the source says {', '.join(said[lic])})" if lic in said else ""
            lines.append(f"| {lic}{cited} | {rows} | {hours} |")
        if not per:
            lines.append("| (no rows in this release) | 0 | 0.000 |")
        lines.append("")
    if models:
        lines += ["## Models", "", "Labels, filters and translations in this release were made with:", "",
                  "| Model | Upstream id | License |", "|---|---|---|"]
        for name, m in sorted(models.items()):
            lines.append(f"| {name} | {(m or {}).get('model_id') or '-'} | {(m or {}).get('license') or 'unknown'} |")
        lines.append("")
    return "\n".join(lines)


def dataset_card_md(release: dict[str, Any]) -> str:
    """README.md with Hugging Face dataset-card metadata: one config per language (Parquet)."""
    lic = release.get("release_license")
    langs = list(release["totals"]["per_lang"])
    lines = ["---", f"license: {_HF_LICENSES.get(lic, 'other') if lic else 'other'}"]
    if lic and lic not in _HF_LICENSES:
        lines.append(f"license_name: {lic}")
    lines += ["language:"] + [f"- {lang}" for lang in langs]
    lines += ["task_categories:", "- automatic-speech-recognition", "configs:"]
    if "parquet" in release["formats"]:
        lines += ["- config_name: all", "  default: true", "  data_files:", "  - split: train",
                  "    path: parquet/*/*.parquet"]
        for lang in langs:
            lines += [f"- config_name: {lang}", "  data_files:", "  - split: train",
                      f"    path: parquet/{lang}/*.parquet"]
    lines += ["---", "", f"# {release['created_from']}", "",
              f"Speech segments with transcripts built by granary_pipe {__version__}: "
              f"{release['totals']['rows']} rows, {release['totals']['hours']:.3f} hours, "
              f"languages {', '.join(langs)}.",
              "Formats (every file, its checksum and the shard naming in `release.json`):", ""]
    lines += [f"- `{name}/`: {RELEASE_FORMATS[name].readers}" for name in release["formats"]]
    lines += ["", f"License: {lic or 'see each source'}; sources and attribution in `ATTRIBUTION.md`.", ""]
    return "\n".join(lines)
