"""Build a release from a run directory: shards per language, release.json, ATTRIBUTION.md.

Layout written under ``out_dir``::

    release.json                          shards (path, sha256, bytes, rows, hours), totals,
                                          licenses, sources, the run's config
    ATTRIBUTION.md                        each source: license, homepage, citation, counts
    parquet/{lang}/{lang}-000000.parquet  release columns + ``audio`` (HF ``Audio`` layout)
    wds/{lang}/{lang}-000000.tar          WebDataset: ``{id}.flac`` + ``{id}.json`` per row

Only kept rows of committed units (``units/U/_COMMITTED`` present) go out; rejected rows
are never read. Each language's rows are ordered by ``sha256(seed, id)``: a shuffle that
depends only on the ids and the seed (not on unit order or on which other rows exist).
The same run and arguments give byte-identical files; nothing time-dependent is written.
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
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from granary_pipe import __version__
from granary_pipe.io.shards import write_parquet_shard, write_wds_shard
from granary_pipe.schema import SCHEMA, conform

FORMAT_VERSION = 1
COMMIT_MARKER = "_COMMITTED"
_LANG_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_OWNED = ("parquet", "wds", "release.json", "ATTRIBUTION.md")


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """Load ``run_dir/run.json``; ``FileNotFoundError`` naming the path when it is missing."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"not a run directory: {path} does not exist")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def committed_units(run_dir: Path) -> list[str]:
    """Names of units under ``run_dir/units`` that carry the commit marker, sorted."""
    units = Path(run_dir) / "units"
    if not units.is_dir():
        return []
    return sorted(p.name for p in units.iterdir() if (p / COMMIT_MARKER).is_file())


def read_unit_table(run_dir: Path, unit: str, which: str, columns: list[str] | None = None) -> pa.Table:
    """Read ``units/UNIT/{which}.parquet`` (``kept``/``rejected``) in the row schema.

    A missing file reads as an empty table. ``columns`` restricts the columns returned.
    """
    path = Path(run_dir) / "units" / unit / f"{which}.parquet"
    if path.is_file():
        table = conform(pq.read_table(path), with_samples=False)
    else:
        table = SCHEMA.empty_table()
    return table.select(columns) if columns else table


def row_langs(table: pa.Table) -> pa.ChunkedArray:
    """Each row's language: ``lang``, else ``lang_hint``, else ``"und"``."""
    return pc.coalesce(table.column("lang"), table.column("lang_hint"), pa.scalar("und"))


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


def _find_key(obj: Any, key: str) -> Any:
    """First value stored under ``key`` anywhere in nested dicts/lists (depth first)."""
    if isinstance(obj, dict):
        if obj.get(key) is not None:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def run_sources(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The source dicts of a run.json (``sources`` list or the single ``source``)."""
    if isinstance(run.get("sources"), list):
        return list(run["sources"])
    return [run["source"]] if isinstance(run.get("source"), dict) else []


def _attribution(
    run_name: str, release_license: str | None, sources: list[dict], counts: dict
) -> str:
    """Render ATTRIBUTION.md; ``counts[source][license] = [rows, seconds]``."""
    lines = [
        "# Attribution",
        "",
        f"This release was built by granary_pipe {__version__} from run `{run_name}`.",
        f"Release license: {release_license or 'not set (see each source below)'}.",
        "",
    ]
    listed = [s.get("name") for s in sources]
    extra = sorted(k for k in counts if k not in listed)
    entries = sources + [{"name": k} for k in extra]
    for src in entries:
        name = src.get("name") or "(unnamed source)"
        lines += [f"## {name}", ""]
        lines.append(f"- License: {src.get('license') or 'not given'}")
        lines.append(f"- Homepage: {src.get('homepage') or 'not given'}")
        cite = (src.get("citation") or "").strip()
        if cite:
            lines += ["- Citation:", "", "```", cite, "```"]
        else:
            lines.append("- Citation: not given")
        lines += ["", "| License | Rows | Hours |", "|---|---:|---:|"]
        per = counts.get(src.get("name"), {})
        for lic in sorted(per):
            rows, secs = per[lic]
            hours = f"{secs / 3600:.3f}" if secs == 0 or secs >= 1.8 else "<0.001"
            lines.append(f"| {lic} | {rows} | {hours} |")
        if not per:
            lines.append("| (no rows in this release) | 0 | 0.000 |")
        lines.append("")
    return "\n".join(lines)


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
            ``release.json``, ``ATTRIBUTION.md``); other files there are left alone.
        release_license: recorded as ``release_license``; default: run.json's
            ``release_license``, else the first ``release_license`` key in its pipeline config.

    Raises:
        FileNotFoundError: no ``run.json`` in ``run_dir``, or a kept row's audio is missing.
        ValueError: no committed unit, no kept rows (for ``langs``), or bad arguments.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = read_run_json(run_dir)
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    if shard_bytes is not None and shard_bytes < 1:
        raise ValueError(f"shard_bytes must be >= 1 or None, got {shard_bytes}")
    units = committed_units(run_dir)
    if not units:
        raise ValueError(f"no committed unit in {run_dir / 'units'} (no {COMMIT_MARKER} markers)")
    table = _read_kept(run_dir, units)
    lang_col = row_langs(table).to_pylist()
    ids = table.column("id").to_pylist()
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, lang in enumerate(lang_col):
        if langs is None or lang in langs:
            by_lang[lang].append(i)
    if not by_lang:
        what = f" for languages {sorted(langs)}" if langs is not None else ""
        raise ValueError(f"no kept rows in committed units of {run_dir}{what}")
    for lang in by_lang:
        if not _LANG_RE.match(lang):
            raise ValueError(f"{run_dir}: language {lang!r} is not usable in a shard name")

    plan: list[tuple[str, int, list[int]]] = []
    for lang in sorted(by_lang):
        order = sorted(by_lang[lang], key=lambda i: (_shuffle_key(seed, ids[i]), ids[i]))
        for n, shard in enumerate(_plan_shards(run_dir, table, order, shard_rows, shard_bytes)):
            plan.append((lang, n, shard))

    if release_license is None:
        release_license = run.get("release_license") or _find_key(
            run.get("pipeline") or {}, "release_license"
        )
    _prepare_out_dir(out_dir, overwrite)
    tmp = out_dir / f".tmp-release-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        durations = table.column("duration_s").to_pylist()
        licenses = table.column("license").to_pylist()
        sources_col = table.column("source").to_pylist()
        shard_entries: list[dict[str, Any]] = []
        per_lang: dict[str, dict[str, Any]] = {}
        lic_rows: dict[str, int] = defaultdict(int)
        attrib: dict[Any, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
        for lang, n, idx in tqdm(plan, desc="release", unit="shard", disable=not progress):
            sub = table.take(pa.array(idx, pa.int64()))
            audio = _read_audio(run_dir, sub)
            seconds = math.fsum(durations[i] or 0.0 for i in idx)
            for fmt, ext, write in (
                ("parquet", "parquet", write_parquet_shard),
                ("wds", "tar", write_wds_shard),
            ):
                rel = f"{fmt}/{lang}/{lang}-{n:06d}.{ext}"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                write(tmp / rel, sub, audio)
                shard_entries.append(_file_entry(tmp, rel, fmt, lang, len(idx), seconds))
            stats = per_lang.setdefault(lang, {"rows": 0, "seconds": [], "shards": 0})
            stats["rows"] += len(idx)
            stats["seconds"].append(seconds)
            stats["shards"] += 1
            for i in idx:
                lic = licenses[i] or "unknown"
                lic_rows[lic] += 1
                cell = attrib[sources_col[i]][lic]
                cell[0] += 1
                cell[1] += durations[i] or 0.0

        shard_entries.sort(key=lambda e: e["path"])
        total_s = math.fsum(s for v in per_lang.values() for s in v["seconds"])
        sources = run_sources(run)
        release = {
            "format_version": FORMAT_VERSION,
            "created_from": run_dir.resolve().name,
            "granary_pipe_version": __version__,
            "release_license": release_license,
            "sharding": {"seed": seed, "shard_rows": shard_rows, "shard_bytes": shard_bytes,
                         "langs": sorted(langs) if langs is not None else None},
            "shards": shard_entries,
            "totals": {
                "rows": sum(v["rows"] for v in per_lang.values()),
                "hours": round(total_s / 3600, 6),
                "per_lang": {
                    lang: {
                        "rows": v["rows"],
                        "hours": round(math.fsum(v["seconds"]) / 3600, 6),
                        "shards": v["shards"],
                    }
                    for lang, v in sorted(per_lang.items())
                },
            },
            "licenses": dict(sorted(lic_rows.items())),
            "sources": sources,
            "config": run.get("pipeline"),
        }
        (tmp / "ATTRIBUTION.md").write_text(
            _attribution(release["created_from"], release_license, sources, attrib),
            encoding="utf-8",
        )
        (tmp / "release.json").write_text(
            json.dumps(release, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        _clear_owned(out_dir, keep=tmp)
        for name in ("parquet", "wds", "ATTRIBUTION.md", "release.json"):  # release.json last
            os.replace(tmp / name, out_dir / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return release
