"""Release formats as one table (:data:`RELEASE_FORMATS`): each format's name (also its directory), shard
file names and writer; adding a format is one entry here. Design: docs/architecture.md, "After the run".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:
    import pyarrow as pa

ShardWriter = Callable[[Sequence[Path], int, "pa.Table", Sequence[bytes], Sequence[int]], None]
"""``(the shard's files (:meth:`ReleaseFormat.paths`), shard number, rows, FLAC payloads, FLAC frames)``."""


@dataclass(frozen=True)
class ReleaseFormat:
    """One release format: where its shards go, what they are called, and who writes them."""

    name: str  # in --formats, release.json and the docs; also the top directory of its files
    files: tuple[str, ...]  # the files of shard N under {name}/{lang}/ ({lang}, %06d = N), in writing order
    write: ShardWriter
    needs_frames: bool  # the writer needs each FLAC's sample count (read from its header)
    default: bool  # written when no --formats is given
    readers: str  # who reads it (for the dataset card)

    def naming(self) -> str:
        """The shard naming release.json records, e.g. ``wds/{lang}/{lang}-%06d.tar``."""
        return " + ".join(f"{self.name}/{{lang}}/{f}" for f in self.files)

    def paths(self, lang_dir: Path, lang: str, shard: int) -> list[Path]:
        """The files of shard ``shard`` of ``lang`` under ``lang_dir``, in :attr:`files` order."""
        return [lang_dir / (f.replace("{lang}", lang) % shard) for f in self.files]


def _lazy(module: str, function: str) -> ShardWriter:
    """``granary_pipe.io.MODULE.FUNCTION``, imported on the first call: the CLI's option parsing reads the
    table and should not load pyarrow and soundfile."""

    def call(*args: Any) -> None:
        getattr(importlib.import_module(f"granary_pipe.io.{module}"), function)(*args)
    return call


RELEASE_FORMATS: dict[str, ReleaseFormat] = {f.name: f for f in (
    ReleaseFormat("parquet", ("{lang}-%06d.parquet",), _lazy("shards", "write_parquet_shard"),
                  needs_frames=False, default=True,
                  readers="pyarrow, pandas, duckdb, Hugging Face `datasets` (its `audio` column reads as `Audio`)"),
    ReleaseFormat("wds", ("{lang}-%06d.tar",), _lazy("shards", "write_wds_shard"), needs_frames=False, default=True,
                  readers="webdataset (`{id}.flac` + `{id}.json` per row), `granary train`"),
    ReleaseFormat("nemo", ("manifest_%06d.json", "audio_%06d.tar"), _lazy("shards", "write_nemo_shard"),
                  needs_frames=True, default=False,
                  readers="NeMo tarred audio datasets (brace patterns in `release.json`'s `nemo`)"),
    ReleaseFormat("lhotse_shar", ("cuts.%06d.jsonl.gz", "recording.%06d.tar"), _lazy("shards", "write_shar_shard"),
                  needs_frames=True, default=False,
                  readers="lhotse (`CutSet.from_shar(in_dir=\"lhotse_shar/LANG\")`)"),
)}  # every release format, in the order release.json lists them

FORMATS = tuple(RELEASE_FORMATS)
DEFAULT_FORMATS = tuple(name for name, f in RELEASE_FORMATS.items() if f.default)
"""Parquet and WebDataset; ``nemo`` and ``lhotse_shar`` each add a full copy of the audio: opt in."""


def resolve_formats(formats: Iterable[str] | str | None) -> tuple[str, ...]:
    """Validate ``formats`` (names from :data:`FORMATS`, a comma-separated string, or ``"all"``;
    None: :data:`DEFAULT_FORMATS`); canonical names in table order."""
    if formats is None:
        return DEFAULT_FORMATS
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = list(formats)
    if formats == ["all"]:
        return FORMATS
    names = set(formats)
    if unknown := sorted(names - set(FORMATS)):
        raise ValueError(f"unknown release format(s) {unknown}; choose from {list(FORMATS)} or 'all'")
    if not names:
        raise ValueError(f"no release format given; choose from {list(FORMATS)}")
    return tuple(f for f in FORMATS if f in names)


def format_names(formats: Iterable[str] | None) -> list[str] | None:
    """``formats`` sorted, once each (None stays None: every format); unknown names are kept for the caller."""
    return None if formats is None else sorted(set(formats))
