"""Per-row histograms of a run (duration, characters per second, language-ID confidence), binned
as the rows stream from DuckDB, on the edges matplotlib's ``hist`` would choose for the raw values."""

from __future__ import annotations

from typing import Any

import numpy as np

from granary_pipe.report.scan import RunScan

CHAR_RATE_CLIP = 60.0
"""Characters per second above this are counted in the last bin (shown at the clip)."""

Binned = dict[str, tuple[np.ndarray, np.ndarray] | None]
"""Per side (``kept``, ``rejected``, in that order): (bin edges, counts), None where no row has a value."""

METRICS: dict[str, tuple[int, tuple[float, float] | None]] = {
    "duration_s": (30, None), "char_rate": (30, None), "lang_prob": (20, (0.0, 1.0))}
"""Each metric's bins and fixed range (None: the values' range)."""

_VALUES = {
    "duration_s": "CAST(duration_s AS DOUBLE)",
    "lang_prob": "CAST(lang_prob AS DOUBLE)",
    # non-space characters of text per second, where both are known and positive (NaN is not > 0)
    "char_rate": ("CASE WHEN duration_s > 0 AND NOT isnan(duration_s) AND length(regexp_replace(text, "
                  "'[\\s\\pZ]+', '', 'g')) > 0 THEN least(length(regexp_replace(text, '[\\s\\pZ]+', '', 'g')) "
                  f"/ duration_s, {CHAR_RATE_CLIP}) END"),
}


def _known(expr: str) -> str:
    return f"({expr} IS NOT NULL AND NOT isnan({expr}))"


def row_histograms(scan: RunScan) -> dict[str, Binned]:
    """``{metric: {side: (edges, counts)}}`` over the committed units' kept and rejected rows."""
    def inner(s: RunScan) -> str:
        values = ", ".join(f"{e} AS {k}" for k, e in _VALUES.items())
        return f"(SELECT kept, {values} FROM {s.rows_sql(['duration_s', 'lang_prob', 'text'])})"

    aggs = ", ".join(f"min({k}) FILTER (WHERE {_known(k)}) AS {k}_min, max({k}) FILTER (WHERE {_known(k)}) "
                     f"AS {k}_max, count({k}) FILTER (WHERE {_known(k)}) AS {k}_n" for k in _VALUES)
    ranges = list(scan.fetch(lambda s: f"SELECT kept, {aggs} FROM {inner(s)} GROUP BY kept"))  # per chunk and side
    edges: dict[str, np.ndarray] = {}
    for key, (bins, value_range) in METRICS.items():
        seen = [g for g in ranges if g[f"{key}_n"]]
        if seen:
            lo, hi = min(g[f"{key}_min"] for g in seen), max(g[f"{key}_max"] for g in seen)
            edges[key] = np.histogram_bin_edges(np.array([lo, hi], dtype=np.float64), bins, value_range)
    counts: dict[str, dict[str, np.ndarray]] = {k: {} for k in METRICS}
    if edges:
        for batch in scan.batches(lambda s: f"SELECT kept, {', '.join(edges)} FROM {inner(s)}"):
            kept = batch.column("kept").to_numpy(zero_copy_only=False)
            for key, e in edges.items():
                values = batch.column(key).to_numpy(zero_copy_only=False).astype(np.float64)
                for side, mask in (("kept", kept), ("rejected", ~kept)):
                    v = values[mask & ~np.isnan(values)]
                    if len(v):
                        counts[key][side] = counts[key].get(side, 0) + np.histogram(v, e)[0]
    return {key: {side: (edges[key], counts[key][side]) if side in counts[key] else None
                  for side in ("kept", "rejected")} for key in METRICS}


def example_licenses(scan: RunScan, ids: list[str]) -> dict[str, Any]:
    """``{id: license}`` of the rejected rows with these ids."""
    if not ids:
        return {}
    quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in dict.fromkeys(ids))
    rows = scan.fetch(lambda s: f"SELECT id, license FROM {s.rows_sql(['id', 'license'], ['rejected'])} "
                                f"WHERE id IN ({quoted})")
    return {r["id"]: r["license"] for r in rows}
