"""The one Arrow row schema every stage reads and writes: a row is a speech segment (before segmentation,
a whole recording), times in seconds, rejected when ``drop_reason`` is set.
Column meanings: docs/architecture.md, "Contracts"."""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from granary_pipe import __version__

SAMPLE_RATE_HZ = 16_000

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("unit", pa.string()),
        pa.field("source", pa.string()),
        pa.field("audio_path", pa.string()),
        pa.field("audio_relpath", pa.string()),
        pa.field("offset_s", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("recording_duration_s", pa.float64()),
        pa.field("source_sample_rate_hz", pa.int32()),
        pa.field("source_channels", pa.int32()),
        pa.field("source_codec", pa.string()),
        pa.field("license", pa.string()),
        pa.field("license_raw", pa.string()),
        pa.field("lang_hint", pa.string()),
        pa.field("ref_text", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("lang_prob", pa.float32()),
        pa.field("text", pa.string()),
        pa.field("text_asr", pa.string()),
        pa.field("pass1_text", pa.string()),
        pa.field("asr_model", pa.string()),
        pa.field("avg_logprob", pa.float32()),
        pa.field("compression_ratio", pa.float32()),
        pa.field("no_speech_prob", pa.float32()),
        pa.field("translation", pa.string()),
        pa.field("translation_lang", pa.string()),
        pa.field("speaker", pa.string()),
        pa.field("flags", pa.list_(pa.string())),
        pa.field("drop_reason", pa.string()),
        pa.field("audio_file", pa.string()),
        pa.field("pipeline_version", pa.string()),
    ]
)

TRANSIENT = pa.field("samples", pa.large_binary())
"""In-memory audio column (float32 PCM at 16 kHz); never written to Parquet."""

WORK_SCHEMA = SCHEMA.append(TRANSIENT)


def make_table(rows: Iterable[dict[str, Any]], with_samples: bool = False) -> pa.Table:
    """Build a table in the row schema from dicts; missing keys become null."""
    schema = WORK_SCHEMA if with_samples else SCHEMA
    rows = list(rows)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    for r in rows:
        unknown = set(r) - set(schema.names)
        if unknown:
            raise KeyError(f"columns not in the row schema: {sorted(unknown)}")
    columns["pipeline_version"] = [v if v is not None else __version__ for v in columns["pipeline_version"]]
    return pa.table(columns, schema=schema)


def conform(table: pa.Table, with_samples: bool = True) -> pa.Table:
    """``table`` with exactly the schema's columns in order (adding nulls)."""
    schema = WORK_SCHEMA if with_samples else SCHEMA
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def active_mask(table: pa.Table) -> pa.ChunkedArray:
    """Boolean mask of rows still in play (no ``drop_reason``)."""
    return pc.is_null(table.column("drop_reason"))


def split_active(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split into (rows still in play, rows already rejected)."""
    nulls = table.column("drop_reason").null_count
    if nulls == table.num_rows:  # all rows in play (the common case): no copy of the samples
        return table, table.slice(0, 0)
    if nulls == 0:
        return table.slice(0, 0), table
    mask = active_mask(table)
    return table.filter(mask), table.filter(pc.invert(mask))


def set_column(table: pa.Table, name: str, values: Any) -> pa.Table:
    """Replace column ``name`` with ``values`` cast to the schema's type."""
    idx = table.schema.get_field_index(name)
    typ = table.schema.field(name).type
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=typ)
    return table.set_column(idx, table.schema.field(name), arr.cast(typ))


def reject(table: pa.Table, reasons: list[str | None]) -> pa.Table:
    """Set ``drop_reason`` where ``reasons[i]`` is given and the row is not yet rejected."""
    current = table.column("drop_reason").to_pylist()
    merged = [c if c is not None else r for c, r in zip(current, reasons, strict=True)]
    return set_column(table, "drop_reason", merged)


def add_flags(table: pa.Table, new_flags: list[list[str]]) -> pa.Table:
    """Append flags (names of rules that fired) to each row's ``flags`` list."""
    current = table.column("flags").to_pylist()
    merged = [(c or []) + f for c, f in zip(current, new_flags, strict=True)]
    return set_column(table, "flags", merged)


def drop_transient(table: pa.Table) -> pa.Table:
    """The table without in-memory columns, ready for Parquet."""
    return conform(table, with_samples=False)
