"""Lhotse Shar shards: ``lhotse_shar/{lang}/cuts.%06d.jsonl.gz`` + ``recording.%06d.tar``.

The layout is the one ``lhotse.shar.SharWriter(fields={"recording": "flac"})`` writes, so
``lhotse.CutSet.from_shar(in_dir="REL/lhotse_shar/en")`` loads a language (recordings,
supervisions with text and language) and ``CutSet.from_shar(fields={"cuts": [...],
"recording": [...]})`` takes URLs of any storage lhotse opens:

* ``cuts.N.jsonl.gz``: one ``MonoCut`` per row (release order): ``id`` = row id, ``start``
  0, ``duration`` = FLAC samples / 16 kHz, one supervision spanning the cut (``text``,
  ``language``, ``speaker`` when set, ``custom`` = the row's other release metadata:
  source, license, translation, decoder scores, ...), and a ``recording`` placeholder of
  type ``shar`` that the reader fills from the tar;
* ``recording.N.tar``: per row ``{id}.flac`` then ``{id}.json`` (the recording manifest),
  the pair order lhotse's ``TarIterator`` expects.

Written here rather than with lhotse's ``SharWriter`` (tests check the two agree) because
that writer (1) decodes and re-encodes every FLAC through torch, (2) stamps the gzip header
with the current time, so rebuilt releases would not be byte-identical and their sha256
would change, and (3) needs ``lhotse`` + ``torch`` installed to *write* a release. This
module needs neither; reading the result needs ``lhotse``.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from granary_pipe.io.shards import check_payloads, row_metadata, tar_info
from granary_pipe.schema import SAMPLE_RATE_HZ

_MAPPED = ("id", "text", "lang", "speaker")  # become supervision fields, not custom


def cuts_name(n: int) -> str:
    """File name of shard ``n``'s cut manifest."""
    return f"cuts.{n:06d}.jsonl.gz"


def recording_name(n: int) -> str:
    """File name of shard ``n``'s recording tar."""
    return f"recording.{n:06d}.tar"


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


def write_shar_shard(
    lang_dir: Path, n: int, table: pa.Table, audio: Sequence[bytes], frames: Sequence[int]
) -> tuple[Path, Path]:
    """Write ``cuts.N.jsonl.gz`` and ``recording.N.tar`` of shard ``n`` under ``lang_dir``.

    Deterministic: fixed tar headers, gzip header with mtime 0 and no file name.
    Returns (cuts path, recording tar path).
    """
    cuts_path, tar_path = lang_dir / cuts_name(n), lang_dir / recording_name(n)
    check_payloads(tar_path, table, audio)
    cuts = [cut_dict(meta, f) for meta, f in zip(row_metadata(table), frames)]
    with open(tar_path, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for cut, flac in zip(cuts, audio):
            rec = (json.dumps(cut["recording"]) + "\n").encode()
            tar.addfile(tar_info(f"{cut['id']}.flac", len(flac)), io.BytesIO(flac))
            tar.addfile(tar_info(f"{cut['id']}.json", len(rec)), io.BytesIO(rec))
    with open(cuts_path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for cut in cuts:
            gz.write((json.dumps(cut, ensure_ascii=False) + "\n").encode())
    return cuts_path, tar_path
