"""Shard writers for releases: Parquet (Hugging Face ``Audio`` layout) and WebDataset tar, and the
row metadata and tar headers the NeMo and Lhotse writers share.

Every writer is deterministic (no timestamps, fixed tar headers and Parquet options). A release row is
the row schema less :data:`RELEASE_DROPPED`, plus ``audio``: ``struct<bytes, path>`` (the
``datasets.Audio`` storage layout) holding the segment's FLAC; ``audio_path`` is the corpus-relative
path, never the curator's (:func:`public_rows`).
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from granary_pipe.schema import SAMPLE_RATE_HZ, SCHEMA

RELEASE_DROPPED = ("unit", "drop_reason", "audio_file", "audio_relpath")
"""Row-schema columns a release leaves out: run bookkeeping, always null, run-relative, or
(``audio_relpath``) carried as ``audio_path`` instead."""

AUDIO_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
"""Arrow storage type of the Hugging Face ``datasets.Audio`` feature."""

PARQUET_ROW_GROUP_ROWS = 100
"""Rows per Parquet row group: small groups keep audio shards cheap to read partially."""

_HF_DTYPES = {pa.string(): "string", pa.float64(): "float64", pa.float32(): "float32", pa.int32(): "int32",
              pa.int64(): "int64", pa.bool_(): "bool"}


def metadata_fields() -> list[pa.Field]:
    """Fields of the row schema that a release carries (all nullable, schema order)."""
    return [f.with_nullable(True) for f in SCHEMA if f.name not in RELEASE_DROPPED]


def release_schema() -> pa.Schema:
    """Arrow schema of a release Parquet shard (``id``, ``audio``, the other metadata columns), with Hugging
    Face features metadata; nullable, as ``datasets`` applies its features to nullable fields only."""
    fields = metadata_fields()
    fields.insert(1, pa.field("audio", AUDIO_TYPE))
    features: dict[str, Any] = {}
    for f in fields:
        if f.name == "audio":
            features["audio"] = {"sampling_rate": SAMPLE_RATE_HZ, "_type": "Audio"}
        elif f.type in _HF_DTYPES:
            features[f.name] = {"dtype": _HF_DTYPES[f.type], "_type": "Value"}
        # other types (``flags``: list<string>) are left out: ``datasets`` infers them from the Arrow type
    meta = {"info": {"features": features}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(meta)})


def _clean_float32(value: Any) -> Any:
    """Shortest decimal that round-trips a float32 (0.9, not 0.8999999761581543); None for NaN and inf."""
    return None if value is None else _finite(float(str(np.float32(value))))


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def public_rows(table: pa.Table) -> pa.Table:
    """``table`` with ``audio_path`` replaced by ``audio_relpath`` (relative to the corpus root, set at
    ingest; null where a row has none): what a release may show of where the audio came from."""
    idx = table.schema.get_field_index("audio_path")
    if idx < 0:
        return table
    rel = (table.column("audio_relpath") if "audio_relpath" in table.column_names
           else pa.nulls(table.num_rows, pa.string()))
    return table.set_column(idx, table.schema.field(idx), rel.cast(table.schema.field(idx).type))


def row_metadata(table: pa.Table) -> list[dict[str, Any]]:
    """Per-row metadata dicts (release columns, schema order) for WebDataset ``.json``."""
    table = public_rows(table)
    cols: dict[str, list[Any]] = {}
    for f in metadata_fields():
        clean = _clean_float32 if f.type == pa.float32() else _finite
        cols[f.name] = [clean(v) for v in table.column(f.name).to_pylist()]
    return [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]


def check_payloads(path: Path, table: pa.Table, audio: Sequence[bytes]) -> None:
    """``ValueError`` naming ``path`` unless there is one audio payload per row."""
    if len(audio) != table.num_rows:
        raise ValueError(f"{path}: {table.num_rows} rows but {len(audio)} audio payloads")


def flac_frames(flac: bytes) -> int:
    """Number of samples in a FLAC payload (read from its header, not decoded)."""
    return sf.info(io.BytesIO(flac)).frames


def write_parquet_shard(paths: Sequence[Path], n: int, table: pa.Table, audio: Sequence[bytes],
                        frames: Sequence[int]) -> None:
    """Write one Parquet shard (``paths``: its one file): the release columns of ``table`` (row schema)
    plus the ``audio`` struct of ``audio[i]`` (row ``i``'s FLAC) and ``"{id}.flac"``."""
    path, = paths
    check_payloads(path, table, audio)
    table = public_rows(table)
    schema = release_schema()
    names = pa.array([f"{i}.flac" for i in table.column("id").to_pylist()], pa.string())
    audio_arr = pa.StructArray.from_arrays([pa.array(list(audio), pa.binary()), names], fields=list(AUDIO_TYPE))
    out = pa.Table.from_arrays(
        [audio_arr if f.name == "audio" else table.column(f.name).cast(f.type) for f in schema], schema=schema)
    non_audio = [f.name for f in schema if f.name != "audio"]
    pq.write_table(out, path, compression="zstd", row_group_size=PARQUET_ROW_GROUP_ROWS, use_dictionary=non_audio,
                   write_statistics=non_audio)


def write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    """Write a tar of ``(name, data)`` regular members whose headers depend only on name and size
    (mtime 0, uid/gid 0, no owner names, mode 0644): every tar a release writes."""
    with open(path, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.type = len(data), 0, 0o644, tarfile.REGTYPE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))


def write_wds_shard(paths: Sequence[Path], n: int, table: pa.Table, audio: Sequence[bytes],
                    frames: Sequence[int]) -> None:
    """Write one WebDataset tar (``paths``: its one file): per row, in release order, ``{id}.flac`` then
    ``{id}.json``."""
    path, = paths
    check_payloads(path, table, audio)
    members = []
    for meta, flac in zip(row_metadata(table), audio, strict=True):
        payload = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()
        members += [(f"{meta['id']}.flac", flac), (f"{meta['id']}.json", payload)]
    write_tar(path, members)
