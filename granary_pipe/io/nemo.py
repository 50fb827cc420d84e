"""NeMo tarred-audio shards: ``nemo/{lang}/manifest_%06d.json`` next to ``nemo/{lang}/audio_%06d.tar``.

This is the layout NeMo's ``scripts/speech_recognition/convert_to_tarred_audio_dataset.py``
writes and its tarred datasets read (both the WebDataset pipeline of
``TarredAudioToTextDataset`` and the Lhotse adapter ``LazyNeMoTarredIterator``):

* ``audio_N.tar`` holds one regular member per row, ``{id}.flac`` (16 kHz mono), in the
  release's shuffled order, nothing else;
* ``manifest_N.json`` holds one JSON object per line, same order, with ``audio_filepath``
  = the member name inside ``audio_N.tar``, ``duration`` (seconds, from the FLAC's sample
  count), ``text``, ``lang`` and ``shard_id`` = N, plus ``id``, ``source``, ``license``,
  ``recording_id``, ``offset_s``. Rows with a ``translation`` also carry the AST fields of
  NeMo's Canary convention: ``source_lang`` (= ``lang``), ``target_lang``
  (= ``translation_lang``), ``answer`` (= ``translation``) and ``taskname: "ast"``.

The names matter: NeMo's Lhotse adapter finds shard ids with the regexes
``manifest[^/]*_(\\d+)[^/]*\\.json`` and ``audio[^/]*_(\\d+)[^/]*\\.tar`` on the file names, so
the WebDataset tars (``wds/{lang}/{lang}-N.tar``) cannot double as NeMo's audio tars and
this format carries its own copy of the audio. In a NeMo config (``_OP_``/``_CL_`` are NeMo's
spelling of ``{``/``}``)::

    manifest_filepath: REL/nemo/en/manifest__OP_000000..000002_CL_.json
    tarred_audio_filepaths: REL/nemo/en/audio__OP_000000..000002_CL_.tar

release.json records these two strings per language under ``nemo``.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from granary_pipe.io.shards import check_payloads, row_metadata, tar_info
from granary_pipe.schema import SAMPLE_RATE_HZ

_EXTRA = ("id", "source", "license", "recording_id", "offset_s")


def manifest_name(n: int) -> str:
    """File name of shard ``n``'s manifest."""
    return f"manifest_{n:06d}.json"


def tar_name(n: int) -> str:
    """File name of shard ``n``'s audio tar."""
    return f"audio_{n:06d}.tar"


def manifest_lines(table: pa.Table, frames: Sequence[int], shard_id: int) -> list[dict[str, Any]]:
    """NeMo manifest entries of a shard (row order); ``frames[i]`` = samples of row ``i``'s FLAC."""
    out = []
    for meta, n in zip(row_metadata(table), frames):
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


def write_nemo_shard(
    lang_dir: Path, n: int, table: pa.Table, audio: Sequence[bytes], frames: Sequence[int]
) -> tuple[Path, Path]:
    """Write ``manifest_N.json`` and ``audio_N.tar`` of shard ``n`` under ``lang_dir``.

    Deterministic (fixed tar headers, no timestamps). Returns (manifest path, tar path).
    """
    manifest, tar_path = lang_dir / manifest_name(n), lang_dir / tar_name(n)
    check_payloads(tar_path, table, audio)
    lines = manifest_lines(table, frames, n)
    with open(tar_path, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry, flac in zip(lines, audio):
            tar.addfile(tar_info(entry["audio_filepath"], len(flac)), io.BytesIO(flac))
    with open(manifest, "w", encoding="utf-8", newline="\n") as fh:
        for entry in lines:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return manifest, tar_path
