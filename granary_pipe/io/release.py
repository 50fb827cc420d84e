"""Build a release from a run directory: shards per language, release.json, ATTRIBUTION.md.

Layout written under ``out_dir`` (formats chosen by ``formats``; default parquet + wds; each
format's directory and shard names come from :data:`granary_pipe.io.formats.RELEASE_FORMATS`)::

    release.json                          every file (path, format, lang, sha256, bytes, rows,
                                          hours), totals per language and per format, release
                                          license + rows excluded by it, sources and their
                                          licenses, the run's config, models (id, license,
                                          sha256) and provenance (fingerprint, git, versions)
                                          (:mod:`granary_pipe.io.release_meta`)
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
default; ``nemo`` and ``lhotse_shar`` are opt-in.

:func:`build_release` runs three steps: :func:`select_rows` (which kept rows go out),
:func:`write_formats` (every format's shards, into a temporary directory) and the release.json,
ATTRIBUTION.md and README.md written from what they return; the lot is then moved into place,
release.json last.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from granary_pipe import licenses
from granary_pipe.audit_models import check_release_models
from granary_pipe.licenses import compatible  # the one rule set, shared with audit and the gate
from granary_pipe.io.formats import DEFAULT_FORMATS, FORMATS, RELEASE_FORMATS, resolve_formats
from granary_pipe.io.release_docs import attribution_md, dataset_card_md
from granary_pipe.io.release_meta import FORMAT_VERSION, Written, file_entry, release_metadata
from granary_pipe.io.shards import flac_frames
from granary_pipe.rundir import MARKER, committed_units, find_key, read_run_json, read_unit_table
from granary_pipe.schema import SCHEMA, row_langs

__all__ = ["DEFAULT_FORMATS", "FORMATS", "FORMAT_VERSION", "Selection", "build_release", "compatible",
           "resolve_formats", "select_rows", "write_formats"]

_LANG_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOP_FILES = ("ATTRIBUTION.md", "README.md")
_OWNED = (*FORMATS, "release.json", *_TOP_FILES)
"""What a release writes in ``out_dir`` (every format's directory): replaced by ``overwrite``."""


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


def release_license_of(run: dict[str, Any], release_license: str | None) -> str | None:
    """The release license as a registry id: the argument, else run.json's ``release_license``,
    else the first ``release_license`` key in its pipeline config, else None. ``ValueError`` for
    one that is unknown or not open-source compliant."""
    if release_license is None:
        release_license = run.get("release_license") or find_key(run.get("pipeline") or {}, "release_license")
    if release_license is None:
        return None
    spdx = licenses.normalize(release_license)
    if spdx == licenses.UNKNOWN:
        raise ValueError(f"release license {release_license!r} is not in the license registry")
    if not licenses.allows_release(spdx):
        raise ValueError(f"release license {spdx} is not open-source compliant "
                         "(non-commercial / no-derivatives): choose an open license")
    return spdx


@dataclass
class Selection:
    """The kept rows of a run and which of them go out, by language."""

    table: pa.Table
    """Every kept row of the committed units (row schema)."""
    by_lang: dict[str, list[int]]
    """language -> indices into ``table`` of the rows released."""
    excluded_by_license: dict[str, int]
    excluded_by_lang: dict[str, int]


def select_rows(run_dir: Path, langs: list[str] | None, release_license: str | None) -> Selection:
    """The kept rows of ``run_dir``'s committed units that go into a release: in ``langs``
    (None: all) and, with a ``release_license``, whose license is compatible with it.

    ``ValueError`` when there is no committed unit, no such row, or a language that cannot name
    a shard."""
    units = committed_units(run_dir)
    if not units:
        raise ValueError(f"no committed unit in {run_dir / 'units'} (no {MARKER} markers)")
    table = _read_kept(run_dir, units)
    licenses_col = table.column("license").to_pylist()
    by_lang: dict[str, list[int]] = defaultdict(list)
    excluded_lang: dict[str, int] = defaultdict(int)
    excluded_lic: dict[str, int] = defaultdict(int)
    compat: dict[str, bool] = {}
    for i, lang in enumerate(row_langs(table).to_pylist()):
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
    return Selection(table, dict(by_lang), dict(excluded_lic), dict(excluded_lang))


def plan_release(
    run_dir: Path, sel: Selection, seed: int, shard_rows: int, shard_bytes: int | None
) -> list[tuple[str, int, list[int]]]:
    """``(lang, shard number, row indices)`` of every shard: languages sorted, rows in shuffle order."""
    ids = sel.table.column("id").to_pylist()
    plan: list[tuple[str, int, list[int]]] = []
    for lang in sorted(sel.by_lang):
        order = sorted(sel.by_lang[lang], key=lambda i: (_shuffle_key(seed, ids[i]), ids[i]))
        for n, shard in enumerate(_plan_shards(run_dir, sel.table, order, shard_rows, shard_bytes)):
            plan.append((lang, n, shard))
    return plan


def write_formats(
    run_dir: Path, table: pa.Table, plan: list[tuple[str, int, list[int]]], formats: tuple[str, ...],
    root: Path, *, progress: bool = False,
) -> Written:
    """Write every shard of ``plan`` in every format of ``formats`` under ``root`` (a format's files
    under its directory); return their release.json entries and the counts release.json totals."""
    durations = table.column("duration_s").to_pylist()
    sources_col = table.column("source").to_pylist()
    licenses_col = table.column("license").to_pylist()
    writers = [RELEASE_FORMATS[fmt] for fmt in formats]
    need_frames = any(w.needs_frames for w in writers)
    out = Written()
    by_source: dict[Any, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    for lang, n, idx in tqdm(plan, desc="release", unit="shard", disable=not progress):
        sub = table.take(pa.array(idx, pa.int64()))
        audio = _read_audio(run_dir, sub)
        frames = [flac_frames(a) for a in audio] if need_frames else []
        seconds = math.fsum(durations[i] or 0.0 for i in idx)
        stats = out.per_lang.setdefault(lang, {"rows": 0, "seconds": [], "shards": 0, "bytes": defaultdict(int)})
        for fmt in writers:
            lang_dir = root / fmt.name / lang
            lang_dir.mkdir(parents=True, exist_ok=True)
            for path in fmt.write(lang_dir, lang, n, sub, audio, frames):
                entry = file_entry(root, path.relative_to(root).as_posix(), fmt.name, lang, len(idx), seconds)
                entry["shard"] = n
                out.shards.append(entry)
                stats["bytes"][fmt.name] += entry["bytes"]
        stats["rows"] += len(idx)
        stats["seconds"].append(seconds)
        stats["shards"] += 1
        for i in idx:
            lic = licenses_col[i] or "unknown"
            out.licenses[lic] = out.licenses.get(lic, 0) + 1
            cell = by_source[sources_col[i]][lic]
            cell[0] += 1
            cell[1] += durations[i] or 0.0
    out.by_source = by_source
    return out


def _write_top_files(root: Path, release: dict[str, Any], run: dict[str, Any], written: Written) -> None:
    """ATTRIBUTION.md, README.md (listed in ``release["files"]``) and release.json under ``root``."""
    (root / "ATTRIBUTION.md").write_text(
        attribution_md(release["created_from"], release["release_license"], release["sources"],
                       written.by_source, run.get("models")),
        encoding="utf-8",
    )
    (root / "README.md").write_text(dataset_card_md(release), encoding="utf-8")
    for name in _TOP_FILES:
        entry = file_entry(root, name, "meta", None, 0, 0.0)
        release["files"].append({k: entry[k] for k in ("path", "format", "sha256", "bytes")})
    (root / "release.json").write_text(json.dumps(release, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
        overwrite: replace an earlier release in ``out_dir`` (every format's directory,
            ``release.json``, ``ATTRIBUTION.md``, ``README.md``); other files there are left alone.
        release_license: SPDX id (or alias) the release is published under; only rows whose
            license is :func:`granary_pipe.licenses.compatible` with it go in, the others are counted in
            release.json's ``excluded.by_license``. Default: run.json's ``release_license``,
            else the first ``release_license`` key in its pipeline config, else none (no
            license filter beyond the run's own license gate).
        formats: names from :data:`FORMATS` (or ``"all"``, or a comma-separated string; the
            former name ``lhotse`` of ``lhotse_shar`` with a ``FutureWarning``); default
            :data:`DEFAULT_FORMATS`.

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
    release_license = release_license_of(run, release_license)
    check_release_models(run_dir, run)  # a model whose license is unknown or forbids release: refused
    sel = select_rows(run_dir, langs, release_license)
    plan = plan_release(run_dir, sel, seed, shard_rows, shard_bytes)

    _prepare_out_dir(out_dir, overwrite)
    tmp = out_dir / f".tmp-release-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        written = write_formats(run_dir, sel.table, plan, formats, tmp, progress=progress)
        release = release_metadata(
            run_dir, run, written, formats=formats, release_license=release_license,
            sharding={"seed": seed, "shard_rows": shard_rows, "shard_bytes": shard_bytes,
                      "langs": sorted(langs) if langs is not None else None},
            excluded={"by_license": sel.excluded_by_license, "by_lang": sel.excluded_by_lang})
        _write_top_files(tmp, release, run, written)
        _clear_owned(out_dir, keep=tmp)
        for fmt in formats:
            os.replace(tmp / fmt, out_dir / fmt)
        for name in (*_TOP_FILES, "release.json"):  # release.json last
            os.replace(tmp / name, out_dir / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return release
