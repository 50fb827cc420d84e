"""Shard writers for releases: Parquet (Hugging Face ``Audio`` layout) and WebDataset tar.

NeMo manifests (:mod:`granary_pipe.io.nemo`) and Lhotse Shar (:mod:`granary_pipe.io.lhotse_shar`)
have their own modules; they reuse :func:`tar_info` and :func:`row_metadata` from here.

Both writers are deterministic: the same rows and audio bytes give byte-identical files
(no timestamps, fixed tar ownership and modes, fixed Parquet writer options), so a
release rebuilt from the same run has the same sha256 for every shard.

A release row is the segment row of :mod:`granary_pipe.schema` without the run-internal
columns (:data:`RELEASE_DROPPED`), plus ``audio``: ``struct<bytes: binary, path: string>``
holding the segment's 16 kHz mono FLAC, the storage layout of the ``datasets.Audio``
feature. Its ``audio_path`` is the corpus-relative path (the row's ``audio_relpath``), never
the curator's absolute path or a source-cache path (:func:`public_rows`; every writer here,
and the NeMo and Lhotse ones through :func:`row_metadata`, goes through it).
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path
from typing import Any, Sequence

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

_HF_DTYPES = {
    pa.string(): "string",
    pa.float64(): "float64",
    pa.float32(): "float32",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.bool_(): "bool",
}


def metadata_fields() -> list[pa.Field]:
    """Fields of the row schema that a release carries (all nullable, schema order)."""
    return [f.with_nullable(True) for f in SCHEMA if f.name not in RELEASE_DROPPED]


def release_schema() -> pa.Schema:
    """Arrow schema of a release Parquet shard, with Hugging Face features metadata.

    Column order: ``id``, ``audio``, then the remaining metadata columns. Columns are
    nullable because ``datasets`` only applies its metadata features to nullable fields.
    """
    fields = metadata_fields()
    fields.insert(1, pa.field("audio", AUDIO_TYPE))
    features: dict[str, Any] = {}
    for f in fields:
        if f.name == "audio":
            features["audio"] = {"sampling_rate": SAMPLE_RATE_HZ, "_type": "Audio"}
        elif f.type in _HF_DTYPES:
            features[f.name] = {"dtype": _HF_DTYPES[f.type], "_type": "Value"}
        # other types (``flags``: list<string>) are left out: ``datasets`` infers them
        # from the Arrow type, which stays correct across its versions.
    meta = {"info": {"features": features}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(meta)})


def _clean_float32(value: Any) -> Any:
    """Shortest decimal that round-trips a float32 (0.9, not 0.8999999761581543)."""
    if value is None:
        return None
    f = float(str(np.float32(value)))
    return f if math.isfinite(f) else None


def public_rows(table: pa.Table) -> pa.Table:
    """``table`` with ``audio_path`` replaced by ``audio_relpath`` (the path relative to the corpus
    root, set at ingest; null where a row has none):
    what a release may show of where the audio came from."""
    idx = table.schema.get_field_index("audio_path")
    if idx < 0:
        return table
    rel = (table.column("audio_relpath") if "audio_relpath" in table.column_names
           else pa.nulls(table.num_rows, pa.string()))
    return table.set_column(idx, table.schema.field(idx), rel.cast(table.schema.field(idx).type))


def row_metadata(table: pa.Table) -> list[dict[str, Any]]:
    """Per-row metadata dicts (release columns, schema order) for WebDataset ``.json``."""
    table = public_rows(table)
    names = [f.name for f in metadata_fields()]
    cols = {n: table.column(n).to_pylist() for n in names}
    f32 = {f.name for f in metadata_fields() if f.type == pa.float32()}
    rows = []
    for i in range(table.num_rows):
        row = {}
        for n in names:
            v = cols[n][i]
            if n in f32:
                v = _clean_float32(v)
            elif isinstance(v, float) and not math.isfinite(v):
                v = None
            row[n] = v
        rows.append(row)
    return rows


def check_payloads(path: Path, table: pa.Table, audio: Sequence[bytes]) -> None:
    """``ValueError`` naming ``path`` unless there is one audio payload per row."""
    if len(audio) != table.num_rows:
        raise ValueError(f"{path}: {table.num_rows} rows but {len(audio)} audio payloads")


def flac_frames(flac: bytes) -> int:
    """Number of samples in a FLAC payload (read from its header, not decoded)."""
    return sf.info(io.BytesIO(flac)).frames


def write_parquet_shard(path: Path, table: pa.Table, audio: Sequence[bytes]) -> None:
    """Write one Parquet shard: release columns of ``table`` plus the ``audio`` struct.

    ``table`` is in the row schema; ``audio[i]`` is the FLAC of row ``i``. The struct's
    ``path`` is ``"{id}.flac"`` so readers can tell the codec from the name.
    """
    check_payloads(path, table, audio)
    table = public_rows(table)
    schema = release_schema()
    ids = table.column("id").to_pylist()
    audio_arr = pa.StructArray.from_arrays(
        [pa.array(list(audio), pa.binary()), pa.array([f"{i}.flac" for i in ids], pa.string())],
        fields=list(AUDIO_TYPE),
    )
    arrays = [
        audio_arr if f.name == "audio" else table.column(f.name).cast(f.type) for f in schema
    ]
    out = pa.Table.from_arrays(arrays, schema=schema)
    non_audio = [f.name for f in schema if f.name != "audio"]
    pq.write_table(
        out,
        path,
        compression="zstd",
        row_group_size=PARQUET_ROW_GROUP_ROWS,
        use_dictionary=non_audio,
        write_statistics=non_audio,
    )


def tar_info(name: str, size: int) -> tarfile.TarInfo:
    """Header of a regular tar member that depends only on ``name`` and ``size``
    (mtime 0, uid/gid 0, no owner names, mode 0644): shared by every tar a release writes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_wds_shard(path: Path, table: pa.Table, audio: Sequence[bytes]) -> None:
    """Write one WebDataset tar: per row ``{id}.flac`` then ``{id}.json``.

    Members follow the rows' order (the release's shuffled order); tar headers carry
    mtime 0, uid/gid 0, empty owner names and mode 0644, so output depends only on input.
    """
    check_payloads(path, table, audio)
    metas = row_metadata(table)
    with open(path, "wb") as fh, tarfile.open(
        fileobj=fh, mode="w", format=tarfile.PAX_FORMAT
    ) as tar:
        for meta, flac in zip(metas, audio):
            key = meta["id"]
            payload = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()
            for name, data in ((f"{key}.flac", flac), (f"{key}.json", payload)):
                tar.addfile(tar_info(name, len(data)), io.BytesIO(data))
