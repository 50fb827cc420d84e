"""Build a release from a run directory: shards per language, release.json, ATTRIBUTION.md.

Layout written under ``out_dir`` (formats chosen by ``formats``; default parquet + wds)::

    release.json                          every file (path, format, lang, sha256, bytes, rows,
                                          hours), totals per language and per format, release
                                          license + rows excluded by it, sources and their
                                          licenses, the run's config, models (id, license,
                                          sha256) and provenance (fingerprint, git, versions)
    ATTRIBUTION.md                        each source: license, homepage, citation, counts
    README.md                             Hugging Face dataset card: license, one config per
                                          language over the Parquet shards
    parquet/{lang}/{lang}-000000.parquet  release columns + ``audio`` (HF ``Audio`` layout)
    wds/{lang}/{lang}-000000.tar          WebDataset: ``{id}.flac`` + ``{id}.json`` per row
    nemo/{lang}/manifest_000000.json      NeMo tarred dataset (:mod:`granary_pipe.io.nemo`)
    nemo/{lang}/audio_000000.tar
    lhotse_shar/{lang}/cuts.000000.jsonl.gz   Lhotse Shar (:mod:`granary_pipe.io.lhotse_shar`)
    lhotse_shar/{lang}/recording.000000.tar

Every format holds the same rows in the same order, cut at the same places: shard N of a
language is the same rows in each format. Each format is readable on its own, so each
holds its own copy of the audio (~the FLAC bytes once per format; the NeMo and Lhotse
readers need their own tar layouts, see their modules). ``parquet`` + ``wds`` is the
default; ``nemo`` and ``lhotse`` are opt-in.

Only kept rows of committed units (``units/U/_COMMITTED`` present) go out; rejected rows
are never read. With a release license (argument, else run.json's), rows whose license
cannot be relicensed under it (:func:`granary_pipe.licenses.compatible`: CC0/PD rows into
any open license, CC-BY-x into CC-BY-y/CC-BY-SA-y with y >= x, CC-BY-SA-x into CC-BY-SA-y only,
anything else only into itself) stay out and are counted in
``excluded.by_license``. Each language's rows are ordered by ``sha256(seed, id)``: a
shuffle that depends only on the ids and the seed (not on unit order or on which other rows
exist). The same run and arguments give byte-identical files; nothing time-dependent is
written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from granary_pipe import __version__, licenses, models
from granary_pipe.audit import check_release_models, find_key
from granary_pipe.licenses import compatible  # the one rule set, shared with audit and the gate
from granary_pipe.io.lhotse_shar import write_shar_shard
from granary_pipe.io.nemo import brace_patterns, write_nemo_shard
from granary_pipe.io.release_docs import attribution_md, dataset_card_md
from granary_pipe.io.shards import flac_frames, write_parquet_shard, write_wds_shard
from granary_pipe.rundir import MARKER as COMMIT_MARKER
from granary_pipe.rundir import committed_units, read_run_json, read_unit_table, run_sources, unit_errors  # noqa: F401 (re-exported)
from granary_pipe.schema import SCHEMA, row_langs  # noqa: F401 (row_langs re-exported)

FORMAT_VERSION = 2
FORMATS = ("parquet", "wds", "nemo", "lhotse")
"""Every release format, in the order release.json lists them."""
DEFAULT_FORMATS = ("parquet", "wds")
"""Formats written unless asked otherwise: Parquet (pyarrow, pandas, duckdb, HF ``datasets``)
and WebDataset. ``nemo`` and ``lhotse`` each add a full copy of the audio: opt in."""
FORMAT_DIRS = {"parquet": "parquet", "wds": "wds", "nemo": "nemo", "lhotse": "lhotse_shar"}
_LANG_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_OWNED = ("parquet", "wds", "nemo", "lhotse_shar", "release.json", "ATTRIBUTION.md", "README.md")
_TOP_FILES = ("ATTRIBUTION.md", "README.md")


def resolve_formats(formats: Iterable[str] | str | None) -> tuple[str, ...]:
    """Validate ``formats`` (names from :data:`FORMATS`, or ``"all"``); canonical order."""
    if formats is None:
        return DEFAULT_FORMATS
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = list(formats)
    if formats == ["all"]:
        return FORMATS
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown release format(s) {unknown}; choose from {list(FORMATS)} or 'all'")
    if not formats:
        raise ValueError(f"no release format given; choose from {list(FORMATS)}")
    return tuple(f for f in FORMATS if f in formats)


def _read_kept(run_dir: Path, units: list[str]) -> pa.Table:
    tables = [read_unit_table(run_dir, u, "kept") for u in units]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    bad = pc.sum(pc.is_valid(table.column("drop_reason"))).as_py() or 0
    if bad:
        raise ValueError(f"{run_dir}: {bad} rows in kept.parquet have drop_reason set (sink bug)")
    missing = table.filter(pc.is_null(table.column("audio_file"))).column("id").to_pylist()
    if missing:
        raise ValueError(f"{run_dir}: kept rows without audio_file: {missing[:5]}")
    ids = table.column("id")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        raise ValueError(f"{run_dir}: duplicate row ids among kept rows of committed units")
    return table


def _shuffle_key(seed: int, row_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{row_id}".encode()).digest()


def _plan_shards(
    run_dir: Path, table: pa.Table, order: list[int], shard_rows: int, shard_bytes: int | None
) -> list[list[int]]:
    """Cut ``order`` into shards of at most ``shard_rows`` rows and, when given, about
    ``shard_bytes`` bytes of audio (a shard always holds at least one row)."""
    files = table.column("audio_file").to_pylist()
    shards: list[list[int]] = []
    cur: list[int] = []
    cur_bytes = 0
    for i in order:
        size = (run_dir / files[i]).stat().st_size if shard_bytes else 0
        full = len(cur) >= shard_rows or (shard_bytes and cur and cur_bytes + size > shard_bytes)
        if full:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(i)
        cur_bytes += size
    if cur:
        shards.append(cur)
    return shards


def _read_audio(run_dir: Path, table: pa.Table) -> list[bytes]:
    out = []
    for rid, rel in zip(table.column("id").to_pylist(), table.column("audio_file").to_pylist()):
        path = run_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"audio of kept row {rid!r} is missing: {path}")
        out.append(path.read_bytes())
    return out


def _file_entry(root: Path, rel: str, fmt: str, lang: str, rows: int, seconds: float) -> dict:
    path = root / rel
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {
        "path": rel,
        "format": fmt,
        "lang": lang,
        "sha256": digest.hexdigest(),
        "bytes": path.stat().st_size,
        "rows": rows,
        "hours": round(seconds / 3600, 6),
    }


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"release output is not a directory: {out_dir}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"release output {out_dir} exists and is not empty (pass overwrite=True)")
    out_dir.mkdir(parents=True, exist_ok=True)


def _clear_owned(out_dir: Path, keep: Path) -> None:
    """Remove what an earlier release wrote (and stale temp dirs), nothing else."""
    for entry in out_dir.iterdir():
        if entry == keep:
            continue
        if entry.name in _OWNED or entry.name.startswith(".tmp-release-"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


_LOCATION_KEYS = ("manifest", "audio", "listing", "url")


def _public_source(src: dict[str, Any]) -> dict[str, Any]:
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


def _run_provenance(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
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


def build_release(
    run_dir: Path,
    out_dir: Path,
    *,
    shard_rows: int = 1000,
    shard_bytes: int | None = None,
    langs: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    release_license: str | None = None,
    formats: Iterable[str] | str | None = DEFAULT_FORMATS,
) -> dict[str, Any]:
    """Write a release of ``run_dir``'s kept rows into ``out_dir``; return release.json's dict.

    Args:
        run_dir: a run directory (``run.json`` + ``units/``).
        out_dir: where the release goes; must be absent or empty unless ``overwrite``.
        shard_rows: most rows per shard.
        shard_bytes: if given, also cut a shard before its audio payload would exceed this
            many bytes (FLAC bytes; a shard holds at least one row).
        langs: release only these languages (row language: ``lang``, else ``lang_hint``,
            else ``"und"``); ``None`` releases all.
        seed: shuffle seed; the order within a language is by ``sha256(seed, id)``.
        progress: show a tqdm bar over shards.
        overwrite: replace an earlier release in ``out_dir`` (its ``parquet/``, ``wds/``,
            ``nemo/``, ``lhotse_shar/``, ``release.json``, ``ATTRIBUTION.md``,
            ``README.md``); other files there are left alone.
        release_license: SPDX id (or alias) the release is published under; only rows whose
            license is :func:`granary_pipe.licenses.compatible` with it go in, the others are counted in
            release.json's ``excluded.by_license``. Default: run.json's ``release_license``,
            else the first ``release_license`` key in its pipeline config, else none (no
            license filter beyond the run's own license gate).
        formats: names from :data:`FORMATS` (or ``"all"``, or a comma-separated string);
            default :data:`DEFAULT_FORMATS`.

    Raises:
        FileNotFoundError: no ``run.json`` in ``run_dir``, or a kept row's audio is missing.
        ValueError: no committed unit, no kept rows (for ``langs`` / the license), an
            unknown release license or format, bad arguments, or a model in ``run.json`` whose
            license is unknown (not declared) or forbids a release.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = read_run_json(run_dir)
    formats = resolve_formats(formats)
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    if shard_bytes is not None and shard_bytes < 1:
        raise ValueError(f"shard_bytes must be >= 1 or None, got {shard_bytes}")
    if release_license is None:
        release_license = run.get("release_license") or find_key(
            run.get("pipeline") or {}, "release_license"
        )
    if release_license is not None:
        spdx = licenses.normalize(release_license)
        if spdx == licenses.UNKNOWN:
            raise ValueError(f"release license {release_license!r} is not in the license registry")
        if not licenses.allows_release(spdx):
            raise ValueError(f"release license {spdx} is not open-source compliant "
                             "(non-commercial / no-derivatives): choose an open license")
        release_license = spdx
    check_release_models(run_dir, run)  # a model whose license is unknown or forbids release: refused
    units = committed_units(run_dir)
    if not units:
        raise ValueError(f"no committed unit in {run_dir / 'units'} (no {COMMIT_MARKER} markers)")
    table = _read_kept(run_dir, units)
    lang_col = row_langs(table).to_pylist()
    ids = table.column("id").to_pylist()
    licenses_col = table.column("license").to_pylist()
    by_lang: dict[str, list[int]] = defaultdict(list)
    excluded_lang: dict[str, int] = defaultdict(int)
    excluded_lic: dict[str, int] = defaultdict(int)
    compat: dict[str, bool] = {}
    for i, lang in enumerate(lang_col):
        if langs is not None and lang not in langs:
            excluded_lang[lang] += 1
            continue
        lic = licenses_col[i] or licenses.UNKNOWN
        if release_license is not None:
            if lic not in compat:
                compat[lic] = compatible(lic, release_license)
            if not compat[lic]:
                excluded_lic[lic] += 1
                continue
        by_lang[lang].append(i)
    if not by_lang:
        what = f" for languages {sorted(langs)}" if langs is not None else ""
        if excluded_lic:
            what += f" whose license is compatible with {release_license} (excluded: {dict(excluded_lic)})"
        raise ValueError(f"no kept rows in committed units of {run_dir}{what}")
    for lang in by_lang:
        if not _LANG_RE.match(lang):
            raise ValueError(f"{run_dir}: language {lang!r} is not usable in a shard name")

    plan: list[tuple[str, int, list[int]]] = []
    for lang in sorted(by_lang):
        order = sorted(by_lang[lang], key=lambda i: (_shuffle_key(seed, ids[i]), ids[i]))
        for n, shard in enumerate(_plan_shards(run_dir, table, order, shard_rows, shard_bytes)):
            plan.append((lang, n, shard))

    _prepare_out_dir(out_dir, overwrite)
    tmp = out_dir / f".tmp-release-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        durations = table.column("duration_s").to_pylist()
        sources_col = table.column("source").to_pylist()
        shard_entries: list[dict[str, Any]] = []
        per_lang: dict[str, dict[str, Any]] = {}
        lic_rows: dict[str, int] = defaultdict(int)
        attrib: dict[Any, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
        need_frames = "nemo" in formats or "lhotse" in formats
        for lang, n, idx in tqdm(plan, desc="release", unit="shard", disable=not progress):
            sub = table.take(pa.array(idx, pa.int64()))
            audio = _read_audio(run_dir, sub)
            frames = [flac_frames(a) for a in audio] if need_frames else []
            seconds = math.fsum(durations[i] or 0.0 for i in idx)
            written: list[tuple[str, Path]] = []
            for fmt in formats:
                d = tmp / FORMAT_DIRS[fmt] / lang
                d.mkdir(parents=True, exist_ok=True)
                if fmt == "parquet":
                    write_parquet_shard(d / f"{lang}-{n:06d}.parquet", sub, audio)
                    written.append((fmt, d / f"{lang}-{n:06d}.parquet"))
                elif fmt == "wds":
                    write_wds_shard(d / f"{lang}-{n:06d}.tar", sub, audio)
                    written.append((fmt, d / f"{lang}-{n:06d}.tar"))
                elif fmt == "nemo":
                    written += [(fmt, p) for p in write_nemo_shard(d, n, sub, audio, frames)]
                else:
                    written += [(fmt, p) for p in write_shar_shard(d, n, sub, audio, frames)]
            for fmt, path in written:
                entry = _file_entry(tmp, path.relative_to(tmp).as_posix(), fmt, lang, len(idx), seconds)
                entry["shard"] = n
                shard_entries.append(entry)
            stats = per_lang.setdefault(lang, {"rows": 0, "seconds": [], "shards": 0,
                                               "bytes": defaultdict(int)})
            stats["rows"] += len(idx)
            stats["seconds"].append(seconds)
            stats["shards"] += 1
            for fmt, path in written:
                stats["bytes"][fmt] += path.stat().st_size
            for i in idx:
                lic = licenses_col[i] or "unknown"
                lic_rows[lic] += 1
                cell = attrib[sources_col[i]][lic]
                cell[0] += 1
                cell[1] += durations[i] or 0.0

        shard_entries.sort(key=lambda e: e["path"])
        total_s = math.fsum(s for v in per_lang.values() for s in v["seconds"])
        total_bytes = {fmt: sum(v["bytes"].get(fmt, 0) for v in per_lang.values()) for fmt in formats}
        sources = []
        for src in run_sources(run):
            per = attrib.get(src.get("name"), {})
            sources.append({**_public_source(src), "release": {
                "rows": sum(c[0] for c in per.values()),
                "hours": round(math.fsum(c[1] for c in per.values()) / 3600, 6),
                "licenses": {lic: c[0] for lic, c in sorted(per.items())},
            }})
        release = {
            "format_version": FORMAT_VERSION,
            "created_from": run_dir.resolve().name,
            "granary_pipe_version": __version__,
            "release_license": release_license,
            "formats": list(formats),
            "sharding": {"seed": seed, "shard_rows": shard_rows, "shard_bytes": shard_bytes,
                         "langs": sorted(langs) if langs is not None else None,
                         "naming": {fmt: _NAMING[fmt] for fmt in formats}},
            "shards": shard_entries,
            "files": [],
            "totals": {
                "rows": sum(v["rows"] for v in per_lang.values()),
                "hours": round(total_s / 3600, 6),
                "bytes": total_bytes,
                "per_lang": {
                    lang: {
                        "rows": v["rows"],
                        "hours": round(math.fsum(v["seconds"]) / 3600, 6),
                        "shards": v["shards"],
                        "bytes": {fmt: v["bytes"].get(fmt, 0) for fmt in formats},
                    }
                    for lang, v in sorted(per_lang.items())
                },
            },
            "licenses": dict(sorted(lic_rows.items())),
            "excluded": {
                "by_license": dict(sorted(excluded_lic.items())),
                "by_lang": dict(sorted(excluded_lang.items())),
            },
            "sources": sources,
            "config": run.get("pipeline"),
            "models": models.public(run.get("models") or {}),  # made the labels and translations; no paths
            "run": _run_provenance(run_dir, run),
        }
        if "nemo" in formats:
            release["nemo"] = {lang: brace_patterns(f"nemo/{lang}", v["shards"])
                               for lang, v in sorted(per_lang.items())}
        (tmp / "ATTRIBUTION.md").write_text(
            attribution_md(release["created_from"], release_license, sources, attrib, run.get("models")),
            encoding="utf-8",
        )
        (tmp / "README.md").write_text(dataset_card_md(release), encoding="utf-8")
        for name in _TOP_FILES:
            entry = _file_entry(tmp, name, "meta", None, 0, 0.0)
            release["files"].append({k: entry[k] for k in ("path", "format", "sha256", "bytes")})
        (tmp / "release.json").write_text(
            json.dumps(release, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        _clear_owned(out_dir, keep=tmp)
        for fmt in formats:
            os.replace(tmp / FORMAT_DIRS[fmt], out_dir / FORMAT_DIRS[fmt])
        for name in (*_TOP_FILES, "release.json"):  # release.json last
            os.replace(tmp / name, out_dir / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return release


_NAMING = {
    "parquet": "parquet/{lang}/{lang}-%06d.parquet",
    "wds": "wds/{lang}/{lang}-%06d.tar",
    "nemo": "nemo/{lang}/manifest_%06d.json + nemo/{lang}/audio_%06d.tar",
    "lhotse": "lhotse_shar/{lang}/cuts.%06d.jsonl.gz + lhotse_shar/{lang}/recording.%06d.tar",
}
