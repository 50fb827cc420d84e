"""A committed unit's digest: every figure the report and the license audit need of its rows,
computed once from the tables the sink writes and stored in the unit's marker (key ``digest``).

The report (:mod:`granary_pipe.report.totals`) then merges the markers' digests instead of
reading rows: its cost is one small JSON object per unit. A digest is bounded by the unit's
distinct groups, reasons and languages, not by its rows. Its keys (``v`` = :data:`VERSION`):

``groups``
    ``[kept, lang, lang_hint, license, source, drop_reason, rows, rows_with_duration, seconds]``
    per distinct (side, raw ``lang``, ``lang_hint``, ``license``, ``source``, ``drop_reason``);
    ``seconds``: the ``math.fsum`` of the group's ``duration_s`` (nulls as 0).
``examples``
    ``[drop_reason, [[id, lang, text, duration_s], ...]]``: per raw drop_reason of the rejected
    rows, its first :data:`EXAMPLES` rows by id (``lang``: ``lang``, else ``lang_hint``, else und).
``rows_in``, ``recordings``, ``with_kept``
    distinct row ids and recording ids over both tables, recordings with a kept row.
``with_ref``
    rows (both tables) with a reference transcript (``ref_text`` not null nor empty).
``scored``
    ``[drop_reason, rows_scored, rows_good, seconds_good]`` per raw drop_reason of rejected rows
    scored against their reference (:func:`granary_pipe.scoring.span_wer` ≤ ``GOOD_WER_MAX``: good).
``kept_scored``
    ``[rows_scored, rows_garbage, seconds_garbage]`` of the kept rows (WER > ``GARBAGE_WER_MIN``).
``wer``
    ``{lang: [recordings, unscored, word_errors, ref_words, char_errors, ref_chars]}``: per
    recording with a reference, its kept segments' texts joined in time order and scored against
    the whole reference (:func:`granary_pipe.scoring.edit_counts`); a recording with a reference
    and no kept row is unscored. A recording lies in one unit, so these sum over units.

Rows with a reference are taken in file order (kept, then rejected), as the files hold them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from granary_pipe.rundir import read_unit_table
from granary_pipe.scoring import (
    GARBAGE_WER_MIN,
    GOOD_WER_MAX,
    edit_counts,
    normalized_reference,
    span_wer,
    tokens,
)
from granary_pipe.text import normalize

VERSION = 2
"""The digest's layout and meaning; a marker whose digest has another is digested again from its
files. 2: texts scored after :func:`granary_pipe.text.normalize` in the row's language (numbers
in one written form); 1 compared raw number forms."""
KEY = "digest"
"""The marker's key holding the digest."""
EXAMPLES = 2
"""Example rows kept per rejection reason."""
COLUMNS = ["id", "recording_id", "lang", "lang_hint", "license", "source", "drop_reason", "duration_s",
           "offset_s", "text", "ref_text"]
"""The columns a digest reads."""


def unit_digest(kept: pa.Table, rejected: pa.Table) -> dict[str, Any]:
    """The digest (module doc) of a unit's kept and rejected rows, in the order its files hold them."""
    sides = [(True, _columns(kept)), (False, _columns(rejected))]
    groups: dict[tuple, list] = {}
    examples: dict[Any, list[list]] = {}
    ids: set[str] = set()
    recordings: set[str] = set()
    with_kept: set[str] = set()
    for is_kept, c in sides:
        ids.update(c["id"])
        recordings.update(c["recording_id"])
        if is_kept:
            with_kept.update(c["recording_id"])
        for i, dur in enumerate(c["duration_s"]):
            key = (is_kept, c["lang"][i], c["lang_hint"][i], c["license"][i], c["source"][i], c["drop_reason"][i])
            g = groups.get(key)
            if g is None:
                g = groups[key] = [0, 0, []]
            g[0] += 1
            if dur is not None:
                g[1] += 1
                g[2].append(dur)
            if not is_kept:
                _example(examples, c, i)
    out: dict[str, Any] = {
        "v": VERSION,
        "groups": [[*key, n, n_dur, math.fsum(secs)] for key, (n, n_dur, secs) in groups.items()],
        "examples": [[reason, rows] for reason, rows in examples.items()],
        "rows_in": len(ids), "recordings": len(recordings), "with_kept": len(with_kept),
    }
    out.update(_score(sides))
    return out


def digest_of_unit(run_dir: Path, unit: str) -> dict[str, Any]:
    """The digest of a committed unit computed from its own Parquet files (for a marker without one)."""
    return unit_digest(read_unit_table(run_dir, unit, "kept", COLUMNS),
                       read_unit_table(run_dir, unit, "rejected", COLUMNS))


def marker_digest(run_dir: Path, unit: str, marker: dict[str, Any]) -> dict[str, Any]:
    """The marker's digest when it has one of this :data:`VERSION` and layout, else
    :func:`digest_of_unit` (a marker without one, of another version, or written by hand)."""
    d = marker.get(KEY)
    return d if _well_formed(d) else digest_of_unit(run_dir, unit)


def _well_formed(d: Any) -> bool:
    """Whether ``d`` has the layout of this :data:`VERSION` (keys, and the length of each record)."""
    try:
        return (d["v"] == VERSION and all(len(g) == 9 for g in d["groups"])
                and all(len(e) == 2 for e in d["examples"]) and all(len(s) == 4 for s in d["scored"])
                and len(d["kept_scored"]) == 3 and all(len(t) == 6 for t in d["wer"].values())
                and all(isinstance(d[k], int) for k in ("rows_in", "recordings", "with_kept", "with_ref")))
    except (KeyError, TypeError, AttributeError):
        return False


def lang_of(lang: str | None, lang_hint: str | None) -> str:
    """A row's language as :func:`granary_pipe.schema.row_langs` gives it: ``lang``, else ``lang_hint``, else und."""
    return lang if lang is not None else lang_hint if lang_hint is not None else "und"


def _columns(table: pa.Table) -> dict[str, list]:
    return {name: table.column(name).to_pylist() for name in COLUMNS}


def _example(examples: dict[Any, list[list]], c: dict[str, list], i: int) -> None:
    """Keep row ``i`` among its reason's first :data:`EXAMPLES` rows by id."""
    lang = lang_of(c["lang"][i], c["lang_hint"][i])
    rows = examples.setdefault(c["drop_reason"][i], [])
    if len(rows) < EXAMPLES or c["id"][i] < rows[-1][0]:
        rows.append([c["id"][i], lang, c["text"][i], c["duration_s"][i]])
        rows.sort(key=lambda r: r[0])
        del rows[EXAMPLES:]


def _score(sides: list[tuple[bool, dict[str, list]]]) -> dict[str, Any]:
    """Rule scoring per row and reference WER per recording, over the rows with a reference."""
    with_ref = 0
    scored: dict[Any, list] = {}
    kept = [0, 0, []]
    hyps: dict[str, list[tuple[float, str]]] = defaultdict(list)
    refs: dict[str, tuple[str, str]] = {}
    last: tuple[Any, list[str]] = (None, [])  # a recording's rows come together: its reference tokenised once
    for is_kept, c in sides:
        for i, ref in enumerate(c["ref_text"]):
            if not ref:
                continue
            with_ref += 1
            lang, rid = c["lang"][i], c["recording_id"][i]
            if is_kept:
                hyps[rid].append((c["offset_s"][i] or 0.0, c["text"][i] or ""))
                refs[rid] = (lang or "und", ref)
            else:
                refs.setdefault(rid, (lang or "und", ref))
            if (ref, lang) != last[0]:
                last = ((ref, lang), tokens(ref, lang, normalized_reference(ref, lang)))
            wer = span_wer(tokens(c["text"][i], lang), last[1])
            if wer is None:
                continue
            secs = c["duration_s"][i] or 0.0
            if is_kept:
                kept[0] += 1
                if wer > GARBAGE_WER_MIN:
                    kept[1] += 1
                    kept[2].append(secs)
            else:
                d = scored.setdefault(c["drop_reason"][i], [0, 0, []])
                d[0] += 1
                if wer <= GOOD_WER_MAX:
                    d[1] += 1
                    d[2].append(secs)
    wer_totals: dict[str, list[int]] = {}
    for rid, (lang, ref) in refs.items():
        t = wer_totals.setdefault(lang, [0] * 6)
        if rid not in hyps:
            t[1] += 1
            continue
        ref = normalized_reference(ref, lang)
        if ref:
            errors = edit_counts(ref, normalize(" ".join(text for _, text in sorted(hyps[rid])), lang))
            t[0] += 1
            for k, v in enumerate(errors, start=2):
                t[k] += v
    return {"with_ref": with_ref,
            "scored": [[reason, n, good, math.fsum(secs)] for reason, (n, good, secs) in scored.items()],
            "kept_scored": [kept[0], kept[1], math.fsum(kept[2])],
            "wer": wer_totals}
