"""NeMo tarred-audio shards: ``nemo/{lang}/manifest_%06d.json`` next to ``nemo/{lang}/audio_%06d.tar``,
the layout NeMo's ``convert_to_tarred_audio_dataset.py`` writes and its tarred datasets read.

``audio_N.tar`` holds ``{id}.flac`` per row, nothing else; ``manifest_N.json`` one JSON line per row, same
order: ``audio_filepath`` (the member name), ``duration``, ``text``, ``lang``, ``shard_id`` = N, ``id``,
``source``, ``license``, ``recording_id``, ``offset_s``, and for a translated row Canary's AST fields
(``taskname: "ast"``, ``source_lang``, ``target_lang``, ``answer``). NeMo's Lhotse adapter finds shard
ids by the regexes ``manifest[^/]*_(\\d+)[^/]*\\.json`` and ``audio[^/]*_(\\d+)[^/]*\\.tar``, so the
WebDataset tars cannot double as these. release.json's ``nemo`` gives each language's brace patterns
(``manifest__OP_000000..000002_CL_.json``; ``_OP_``/``_CL_`` are NeMo's ``{``/``}``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from granary_pipe.io.shards import check_payloads, row_metadata, write_tar
from granary_pipe.schema import SAMPLE_RATE_HZ

_EXTRA = ("id", "source", "license", "recording_id", "offset_s")


def manifest_lines(table: pa.Table, frames: Sequence[int], shard_id: int) -> list[dict[str, Any]]:
    """NeMo manifest entries of a shard (row order); ``frames[i]`` = samples of row ``i``'s FLAC."""
    out = []
    for meta, n in zip(row_metadata(table), frames, strict=True):
        entry: dict[str, Any] = {
            "audio_filepath": f"{meta['id']}.flac",
            "duration": n / SAMPLE_RATE_HZ,
            "text": meta["text"] if meta["text"] is not None else "",
            "lang": meta["lang"],
            "shard_id": shard_id,
        }
        entry.update((k, meta[k]) for k in _EXTRA)
        if meta.get("translation"):
            entry.update(taskname="ast", source_lang=meta["lang"],
                         target_lang=meta["translation_lang"], answer=meta["translation"])
        out.append(entry)
    return out


def brace_patterns(lang_dir: str, shards: int) -> dict[str, str]:
    """NeMo ``manifest_filepath`` / ``tarred_audio_filepaths`` for ``shards`` shards under ``lang_dir``."""
    last = shards - 1
    rng = f"_OP_{0:06d}..{last:06d}_CL_" if shards > 1 else f"{0:06d}"
    return {
        "manifest_filepath": f"{lang_dir}/manifest_{rng}.json",
        "tarred_audio_filepaths": f"{lang_dir}/audio_{rng}.tar",
    }


def write_nemo_shard(paths: Sequence[Path], n: int, table: pa.Table, audio: Sequence[bytes],
                     frames: Sequence[int]) -> None:
    """Write shard ``n``'s ``manifest_N.json`` and ``audio_N.tar`` (``paths``), deterministically."""
    manifest, tar_path = paths
    check_payloads(tar_path, table, audio)
    lines = manifest_lines(table, frames, n)
    write_tar(tar_path, [(entry["audio_filepath"], flac) for entry, flac in zip(lines, audio, strict=True)])
    with open(manifest, "w", encoding="utf-8", newline="\n") as fh:
        for entry in lines:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
