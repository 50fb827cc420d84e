"""Build small synthetic run directories, laid out as the pipeline's sink writes them.

``make_run(tmp_path)`` gives, under ``tmp_path/run``:

* ``u000000``, ``u000001``: committed (kept + rejected Parquet, FLAC per kept row, marker);
* ``u000002``: written but uncommitted (no ``_COMMITTED``): must be ignored everywhere;
* ``u000003``: failed in run.json, nothing on disk.

Kept rows are in two languages (``en``, ``de``); rejected rows cover license, no-speech,
decode-error (no duration, no language), language-confidence and text filters.

With ``counts=True`` each committed unit's marker holds the per-stage counters the pipeline
would have recorded (:func:`unit_counts`: each rejected row charged to the stage that gives its
reason, :data:`STAGE_OF`) and run.json lists the pipeline's stages (:data:`PIPELINE`).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from granary_pipe import counters, digest, rundir, schema
from granary_pipe.schema import SAMPLE_RATE_HZ, make_table
from granary_pipe.units import Unit


def is_committed(run_dir: Path, unit: str) -> bool:
    """True when the unit's commit marker exists."""
    return (rundir.unit_dir(run_dir, unit) / rundir.MARKER).is_file()


def planned_units(run: dict) -> list[str]:
    """Every unit a run.json says the run planned: ``units_total`` of them."""
    return [rundir.unit_id(k) for k in range(run["units_total"])]


def file_records(unit_path: Path) -> dict[str, dict]:
    """The marker's ``files`` for a unit directory as it is on disk: every file under it (the marker
    and temporaries left out), read and hashed (the sink hashes the bytes it writes instead)."""
    out = {}
    for p in sorted(Path(unit_path).rglob("*")):
        rel = p.relative_to(unit_path).as_posix()
        if p.is_file() and rel != rundir.MARKER and not p.name.startswith("."):
            out[rel] = rundir.file_record(p.read_bytes())
    return out


def plan_units(recordings: pa.Table, per_unit: int) -> list[Unit]:
    """Cut sorted recording rows into units ``u000000, u000001, ...`` in memory (a run streams
    them from its listing file: ``granary_pipe.listing``)."""
    units = []
    for k, start in enumerate(range(0, recordings.num_rows, per_unit)):
        part = recordings.slice(start, per_unit)
        units.append(Unit(rundir.unit_id(k), schema.set_column(part, "unit", [rundir.unit_id(k)] * part.num_rows)))
    return units


@dataclass(frozen=True)
class Row:
    """One synthetic segment row; ``drop_reason`` set means rejected."""

    id: str
    recording_id: str
    lang: str | None
    duration_s: float | None
    license: str = "CC-BY-4.0"
    drop_reason: str | None = None
    lang_hint: str | None = None
    text: str | None = "a short synthetic sentence"
    translation: str | None = None
    translation_lang: str | None = None
    offset_s: float = 0.0
    flags: list[str] = field(default_factory=list)
    ref_text: str | None = None


def _stable(s: str) -> int:
    return zlib.crc32(s.encode())


def _segs(rec: str, lang: str | None, n: int, **kw) -> list[Row]:
    return [
        Row(id=f"{rec}-s{k:03d}", recording_id=rec, lang=lang,
            duration_s=round(0.4 + 0.1 * ((_stable(rec) + k) % 5), 2), offset_s=2.0 * k, **kw)
        for k in range(n)
    ]


DEFAULT_UNITS: dict[str, list[Row]] = {
    "u000000": [
        *_segs("rec00", "en", 3),
        *_segs("rec01", "en", 2, license="CC0-1.0"),
        *_segs("rec02", "de", 2),
        *_segs("rec03", "en", 2, license="CC-BY-NC-4.0", drop_reason="license:CC-BY-NC-4.0"),
        Row("rec04-s000", "rec04", None, 1.5, lang_hint="de", drop_reason="segment:no_speech", text=None),
        Row("rec05-s000", "rec05", None, None, drop_reason="decode_error: invalid data found", text=None),
    ],
    "u000001": [
        *_segs("rec10", "en", 3),
        Row("rec10-s900", "rec10", "en", 0.7, drop_reason="lang:low_confidence"),
        *_segs("rec11", "de", 4, translation="a translated sentence", translation_lang="en"),
        Row("rec11-s900", "rec11", "de", 0.9, drop_reason="hallucination:repeated_ngrams"),
        *_segs("rec12", "de", 2, drop_reason="filter:empty_text", text=""),
    ],
}
"""Committed units. Kept: 14 rows (en 8, de 6); rejected: 8 rows; 9 recordings."""

DEFAULT_UNCOMMITTED: dict[str, list[Row]] = {
    "u000002": _segs("rec20", "en", 2) + _segs("rec21", "en", 1, drop_reason="filter:empty_text"),
}
DEFAULT_FAILED: dict[str, str] = {"u000003": "RuntimeError: worker died"}

SOURCE = {
    "name": "synth-speech",
    "license": "CC-BY-4.0",
    "homepage": "https://example.org/synth-speech",
    "citation": "@misc{synth, title={Synthetic speech}, year={2024}}",
    "manifest": "manifests/synth.yaml",
}


PIPELINE = ["audio.decode", "license.gate", "segment.silero", "asr.language_id", "asr.whisper", "filter.basic",
            "filter.hallucination", "filter.text_lang", "pnc.none"]
"""The stages run.json lists with ``counts=True`` (sink.write comes after them)."""
STAGE_OF = {"decode_error": "audio.decode", "license": "license.gate", "segment": "segment.silero",
            "lang": "asr.language_id", "filter": "filter.basic", "hallucination": "filter.hallucination",
            "decoder": "filter.hallucination", "text_lang": "filter.text_lang"}
"""Reason category -> the stage that gives it; a reason of another category is counted by none."""
DECLARED = ("license", "text_lang:mismatch")
"""Declared rules with a ``:<detail>`` (``license:CC-BY-NC-4.0`` is counted under ``license``)."""


def unit_counts(rows: list[Row]) -> dict[str, dict]:
    """The counters of a unit whose rows went through :data:`PIPELINE` (+ sink): a stage's rows in
    are the rows no earlier stage rejected (as if segmentation had already happened)."""
    out = {}
    position = {stage: i for i, stage in enumerate(PIPELINE)}
    for i, stage in enumerate(PIPELINE + ["sink.write"]):
        c = counters.empty()
        for r in rows:
            by = STAGE_OF.get(reason_category(r.drop_reason)) if r.drop_reason else None
            if by is not None and position[by] < i:  # rejected earlier (an unknown reason: by no stage here)
                continue
            c["rows_in"] += 1
            c["rows_out"] += 1
            if by == stage:
                rule = counters.rule_of(r.drop_reason, DECLARED)
                c["rejected"][rule] = c["rejected"].get(rule, 0) + 1
                c["rejected_s"][rule] = c["rejected_s"].get(rule, 0.0) + (r.duration_s or 0.0)
            for flag in r.flags:
                if STAGE_OF.get(reason_category(flag)) == stage:
                    rule = counters.rule_of(flag, DECLARED)
                    c["flagged"][rule] = c["flagged"].get(rule, 0) + 1
        out[stage] = c
    return out


def reason_category(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


def _write_flac(path: Path, seconds: float, seed: int) -> None:
    n = int(round(seconds * SAMPLE_RATE_HZ))
    t = np.arange(n) / SAMPLE_RATE_HZ
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * (200 + 37 * seed % 600) * t) + 0.02 * rng.standard_normal(n)
    sf.write(path, wave.astype(np.float32), SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")


def _write_unit(run: Path, unit: str, rows: list[Row], commit: bool, counts: bool = False) -> None:
    udir = run / "units" / unit
    (udir / "audio").mkdir(parents=True, exist_ok=True)
    kept, rejected = [], []
    for r in rows:
        d = {k: getattr(r, k) for k in Row.__dataclass_fields__}
        d.update(unit=unit, source=SOURCE["name"], audio_path=f"audio/{r.recording_id}.wav",
                 license_raw=r.license, lang_prob=0.93 if r.lang else None)
        if r.drop_reason is None:
            rel = f"units/{unit}/audio/{r.id}.flac"
            _write_flac(run / rel, r.duration_s, seed=_stable(r.id) % 997)
            d.update(audio_file=rel, avg_logprob=-0.25, compression_ratio=1.4, no_speech_prob=0.01)
            kept.append(d)
        else:
            rejected.append(d)
    kept_t, rejected_t = make_table(kept), make_table(rejected)
    pq.write_table(kept_t, udir / "kept.parquet")
    pq.write_table(rejected_t, udir / "rejected.parquet")
    if commit:  # as the sink writes it: the unit's files (size, sha256), its digest, and its counters if asked
        marker = {"recordings": len({r.recording_id for r in rows}), **({"counts": unit_counts(rows)} if counts else {})}
        marker[rundir.FILES] = file_records(udir)
        marker[digest.KEY] = digest.unit_digest(kept_t, rejected_t)
        (udir / rundir.MARKER).write_text(json.dumps(marker))


def set_digests(run: Path, *, keep: bool = True) -> None:
    """Recompute each committed unit's marker ``digest`` from its files (after a test changed them),
    or with ``keep=False`` remove it (a marker as an older build wrote it)."""
    for unit in rundir.committed_units(run):
        path = rundir.unit_dir(run, unit) / rundir.MARKER
        marker = json.loads(path.read_text())
        marker.pop(digest.KEY, None)
        if keep:
            marker[digest.KEY] = digest.digest_of_unit(run, unit)
        path.write_text(json.dumps(marker))


def make_run(
    tmp_path: Path,
    units: dict[str, list[Row]] | None = None,
    *,
    uncommitted: dict[str, list[Row]] | None = None,
    failed: dict[str, str] | None = None,
    name: str = "run",
    wall_s: float | None = 12.5,
    counts: bool = False,
) -> Path:
    """Write a committed run directory ``tmp_path/name`` and return its path.

    ``units``: committed units (default :data:`DEFAULT_UNITS`); ``uncommitted``: units
    written without a commit marker; ``failed``: unit -> error, recorded in run.json only;
    ``counts``: markers with per-stage counters and run.json with :data:`PIPELINE`.
    """
    units = DEFAULT_UNITS if units is None else units
    uncommitted = DEFAULT_UNCOMMITTED if uncommitted is None else uncommitted
    failed = DEFAULT_FAILED if failed is None else failed
    run = Path(tmp_path) / name
    run.mkdir(parents=True)
    for unit, rows in {**units, **uncommitted}.items():
        _write_unit(run, unit, rows, commit=unit in units, counts=counts)
    planned = [int(u[1:]) for u in {**units, **uncommitted, **failed}]
    stages = [{"use": s} for s in PIPELINE] if counts else [{"use": "license.gate"}]
    run_json = {
        "pipeline": {"name": "demo", "stages": stages},
        "source": SOURCE,
        "versions": {"granary_pipe": "0.1.0"},
        "models": {},
        "git_revision": None,
        "units_total": max(planned) + 1 if planned else 0,
        "units_committed": len(units),
        "unit_errors": dict(sorted(failed.items())),
        "failed_units": sorted(failed),
        "wall_s": wall_s,
    }
    (run / "run.json").write_text(json.dumps(run_json, indent=2))
    return run
