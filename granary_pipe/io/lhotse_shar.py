"""Lhotse Shar shards: ``lhotse_shar/{lang}/cuts.%06d.jsonl.gz`` + ``recording.%06d.tar``, as
``lhotse.shar.SharWriter(fields={"recording": "flac"})`` writes them (``CutSet.from_shar`` reads them).

``cuts.N.jsonl.gz``: one ``MonoCut`` per row, one supervision spanning it (``text``, ``language``,
``speaker``, ``custom`` = the row's other release metadata) and a ``shar`` recording placeholder;
``recording.N.tar``: ``{id}.flac`` then ``{id}.json`` per row. Written here, not by ``SharWriter`` (tests
check the two agree), because that one re-encodes every FLAC through torch, stamps the gzip header with
the time (releases would not be byte-identical) and needs lhotse + torch to write a release.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from granary_pipe.io.shards import check_payloads, row_metadata, write_tar
from granary_pipe.schema import SAMPLE_RATE_HZ

_MAPPED = ("id", "text", "lang", "speaker")  # become supervision fields, not custom


def recording_dict(row_id: str, frames: int) -> dict[str, Any]:
    """Lhotse ``Recording`` manifest of one release row, as Shar stores it (source placeholder)."""
    return {
        "id": row_id,
        "sources": [{"type": "shar", "channels": [0], "source": ""}],
        "sampling_rate": SAMPLE_RATE_HZ,
        "num_samples": frames,
        "duration": frames / SAMPLE_RATE_HZ,
        "channel_ids": [0],
    }


def cut_dict(meta: dict[str, Any], frames: int) -> dict[str, Any]:
    """Lhotse ``MonoCut`` dict of one release row (``meta``: :func:`row_metadata` entry)."""
    duration = frames / SAMPLE_RATE_HZ
    sup: dict[str, Any] = {
        "id": meta["id"],
        "recording_id": meta["id"],
        "start": 0,
        "duration": duration,
        "channel": 0,
    }
    if meta.get("text") is not None:
        sup["text"] = meta["text"]
    if meta.get("lang") is not None:
        sup["language"] = meta["lang"]
    if meta.get("speaker") is not None:
        sup["speaker"] = meta["speaker"]
    custom = {k: v for k, v in meta.items() if k not in _MAPPED and v is not None}
    if custom:
        sup["custom"] = custom
    return {
        "id": meta["id"],
        "start": 0,
        "duration": duration,
        "channel": 0,
        "supervisions": [sup],
        "recording": recording_dict(meta["id"], frames),
        "type": "MonoCut",
    }


def write_shar_shard(paths: Sequence[Path], n: int, table: pa.Table, audio: Sequence[bytes],
                     frames: Sequence[int]) -> None:
    """Write shard ``n``'s ``cuts.N.jsonl.gz`` and ``recording.N.tar`` (``paths``); deterministic: fixed tar
    headers, a gzip header with mtime 0 and no file name."""
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
