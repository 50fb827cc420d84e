"""The release formats' shard writers: Parquet (Hugging Face ``Audio`` layout), WebDataset, NeMo tarred audio
and Lhotse Shar; each deterministic (no timestamps, fixed tar headers and Parquet options).
Design: docs/architecture.md, "After the run" (Release).
"""

from __future__ import annotations

import gzip
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

from granary_pipe.io.formats import RELEASE_FORMATS
from granary_pipe.schema import SAMPLE_RATE_HZ, SCHEMA

RELEASE_DROPPED = ("unit", "drop_reason", "audio_file", "audio_relpath")
"""Row-schema columns a release leaves out: run bookkeeping, always null, run-relative, or
(``audio_relpath``) carried as ``audio_path`` instead."""
AUDIO_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])  # datasets.Audio's storage
PARQUET_ROW_GROUP_ROWS = 100  # small row groups keep audio shards cheap to read partially

_HF_DTYPES = {pa.string(): "string", pa.float64(): "float64", pa.float32(): "float32", pa.int32(): "int32",
              pa.int64(): "int64", pa.bool_(): "bool"}


def metadata_fields() -> list[pa.Field]:
    """Fields of the row schema that a release carries (all nullable, schema order)."""
    return [f.with_nullable(True) for f in SCHEMA if f.name not in RELEASE_DROPPED]


def release_schema() -> pa.Schema:
    """Arrow schema of a release Parquet shard (``id``, ``audio``, the other metadata columns) with Hugging
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
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})


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
    """Per-row metadata dicts (release columns, schema order): WebDataset ``.json``, NeMo manifest entries
    and Lhotse cuts are built from them."""
    table = public_rows(table)
    cols: dict[str, list[Any]] = {}
    for f in metadata_fields():
        clean = _clean_float32 if f.type == pa.float32() else _finite
        cols[f.name] = [clean(v) for v in table.column(f.name).to_pylist()]
    return [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]


def check_payloads(path: Path, table: pa.Table, audio: Sequence[bytes]) -> None:
    """``ValueError`` naming ``path`` unless ``audio`` holds one payload per row of ``table``."""
    if len(audio) != table.num_rows:
        raise ValueError(f"{path}: {table.num_rows} rows but {len(audio)} audio payloads")


def flac_frames(flac: bytes) -> int:
    """Number of samples in a FLAC payload (read from its header, not decoded)."""
    return sf.info(io.BytesIO(flac)).frames


def write_parquet_shard(paths: Sequence[Path], n: int, table: pa.Table, audio: Sequence[bytes],
                        frames: Sequence[int]) -> None:
    """Write one Parquet shard (``paths``: its one file): the release columns of ``table`` plus the ``audio``
    struct of row ``i``'s FLAC ``audio[i]`` and ``"{id}.flac"``."""
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
    """Write a tar of ``(name, data)`` regular members whose headers depend only on name and size."""
    with open(path, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)  # a regular file, mtime 0, mode 0644, uid/gid 0, no owner names
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_wds_shard(paths: Sequence[Path], n: int, table: pa.Table, audio: Sequence[bytes],
                    frames: Sequence[int]) -> None:
    """Write one WebDataset tar (``paths``: its one file): per row ``{id}.flac`` then ``{id}.json``."""
    path, = paths
    check_payloads(path, table, audio)
    members = []
    for meta, flac in zip(row_metadata(table), audio, strict=True):
        payload = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()
        members += [(f"{meta['id']}.flac", flac), (f"{meta['id']}.json", payload)]
    write_tar(path, members)


# NeMo tarred audio (the layout of NeMo's convert_to_tarred_audio_dataset.py): manifest_N.json + audio_N.tar
_NEMO_EXTRA = ("id", "source", "license", "recording_id", "offset_s")


def manifest_lines(table: pa.Table, frames: Sequence[int], shard_id: int) -> list[dict[str, Any]]:
    """NeMo manifest entries of a shard (row order); ``frames[i]`` = samples of row ``i``'s FLAC; a
    translated row gets Canary's AST fields."""
    out = []
    for meta, n in zip(row_metadata(table), frames, strict=True):
        entry: dict[str, Any] = {"audio_filepath": f"{meta['id']}.flac", "duration": n / SAMPLE_RATE_HZ,
                                 "text": meta["text"] if meta["text"] is not None else "", "lang": meta["lang"],
                                 "shard_id": shard_id}
        entry.update((k, meta[k]) for k in _NEMO_EXTRA)
        if meta.get("translation"):
            entry.update(taskname="ast", source_lang=meta["lang"],
                         target_lang=meta["translation_lang"], answer=meta["translation"])
        out.append(entry)
    return out


def brace_patterns(lang_dir: str, shards: int) -> dict[str, str]:
    """NeMo ``manifest_filepath`` / ``tarred_audio_filepaths`` for ``shards`` shards under ``lang_dir``
    (``_OP_``/``_CL_`` are NeMo's ``{``/``}``)."""
    manifest, audio = RELEASE_FORMATS["nemo"].files
    rng = f"_OP_{0:06d}..{shards - 1:06d}_CL_" if shards > 1 else f"{0:06d}"
    return {"manifest_filepath": f"{lang_dir}/{manifest.replace('%06d', rng)}",
            "tarred_audio_filepaths": f"{lang_dir}/{audio.replace('%06d', rng)}"}


def write_nemo_shard(paths: Sequence[Path], n: int, table: pa.Table, audio: Sequence[bytes],
                     frames: Sequence[int]) -> None:
    """Write shard ``n``'s ``manifest_N.json`` and ``audio_N.tar`` (``paths``): ``{id}.flac`` members only."""
    manifest, tar_path = paths
    check_payloads(tar_path, table, audio)
    lines = manifest_lines(table, frames, n)
    write_tar(tar_path, [(entry["audio_filepath"], flac) for entry, flac in zip(lines, audio, strict=True)])
    with open(manifest, "w", encoding="utf-8", newline="\n") as fh:
        for entry in lines:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")


# Lhotse Shar, as lhotse.shar.SharWriter(fields={"recording": "flac"}) writes it (tests check the two agree)
_SUPERVISION = {"text": "text", "language": "lang", "speaker": "speaker"}  # supervision field <- release column


def recording_dict(row_id: str, frames: int) -> dict[str, Any]:
    """Lhotse ``Recording`` manifest of one release row, as Shar stores it (source placeholder)."""
    return {"id": row_id, "sources": [{"type": "shar", "channels": [0], "source": ""}],
            "sampling_rate": SAMPLE_RATE_HZ, "num_samples": frames, "duration": frames / SAMPLE_RATE_HZ,
            "channel_ids": [0]}


def cut_dict(meta: dict[str, Any], frames: int) -> dict[str, Any]:
    """Lhotse ``MonoCut`` dict of one release row (``meta``: a :func:`row_metadata` entry): one supervision
    spanning it, its ``custom`` the row's other metadata."""
    duration = frames / SAMPLE_RATE_HZ
    sup: dict[str, Any] = {"id": meta["id"], "recording_id": meta["id"], "start": 0, "duration": duration,
                           "channel": 0}
    sup.update((key, meta[col]) for key, col in _SUPERVISION.items() if meta.get(col) is not None)
    custom = {k: v for k, v in meta.items() if k != "id" and k not in _SUPERVISION.values() and v is not None}
    if custom:
        sup["custom"] = custom
    return {"id": meta["id"], "start": 0, "duration": duration, "channel": 0, "supervisions": [sup],
            "recording": recording_dict(meta["id"], frames), "type": "MonoCut"}


def write_shar_shard(paths: Sequence[Path], n: int, table: pa.Table, audio: Sequence[bytes],
                     frames: Sequence[int]) -> None:
    """Write shard ``n``'s ``cuts.N.jsonl.gz`` and ``recording.N.tar`` (``paths``); the gzip header has
    mtime 0 and no file name."""
    cuts_path, tar_path = paths
    check_payloads(tar_path, table, audio)
    cuts = [cut_dict(meta, f) for meta, f in zip(row_metadata(table), frames, strict=True)]
    members = []
    for cut, flac in zip(cuts, audio, strict=True):
        members += [(f"{cut['id']}.flac", flac), (f"{cut['id']}.json", (json.dumps(cut["recording"]) + "\n").encode())]
    write_tar(tar_path, members)
    with open(cuts_path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for cut in cuts:
            gz.write((json.dumps(cut, ensure_ascii=False) + "\n").encode())
