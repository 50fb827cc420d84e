"""Batches from a release: WebDataset shards → split → shuffle → duration buckets → waveforms; an
epoch's batches are a pure function of (release, data config, seed, epoch, rank, world).
Design: docs/architecture.md (Train)."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from granary_pipe.train.audio import decode_flac
from granary_pipe.train.config import DataConfig
from granary_pipe.train.features import frame_counts
from granary_pipe.train.tokenizer import Tokenizer, normalize_text

HELD_OUT_SALT = "heldout"
SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class Release:
    """A local release directory and its ``release.json``."""

    root: Path
    info: dict[str, Any]

    def shards(self, fmt: str, langs: list[str] | None = None) -> list[Path]:
        """Absolute paths of the ``fmt`` (``wds``/``parquet``) shards, sorted, optionally by language."""
        return sorted(self.root / s["path"] for s in self.info["shards"]
                      if s.get("format") == fmt and (langs is None or s.get("lang") in langs))

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint records about the data: path, run name, sha256 of release.json."""
        digest = hashlib.sha256((self.root / "release.json").read_bytes()).hexdigest()
        return {"root": str(self.root), "created_from": self.info.get("created_from"),
                "release_json_sha256": digest, "rows": self.info.get("totals", {}).get("rows")}


def is_url(data: str | Path) -> bool:
    return "://" in str(data)


def fetch_release(url: str, dest: str | Path, *, langs: list[str] | None = None, progress: bool = True) -> Path:
    """Download the ``wds`` shards of the release at ``url`` into ``dest`` (``granary download``)."""
    from granary_pipe.io.download import download_release

    report = download_release(url, dest, langs=langs, formats=["wds"], progress=progress)
    if not report.passed:
        raise RuntimeError(f"download of {url} incomplete:\n{report.summary()}")
    return Path(dest)


def check_release(data: str | Path) -> None:
    """Refuse ``--data`` (a path, or a URL whose ``release.json`` is read, nothing written) that is not a
    release with WebDataset shards."""
    if not is_url(data):
        open_release(data)
        return
    from granary_pipe.io.download import read_release

    _require_wds(read_release(str(data)), data)


def _require_wds(info: dict[str, Any], where: str | Path) -> None:
    if not any(s.get("format") == "wds" for s in info.get("shards", [])):
        raise ValueError(f"{where}: the release has no WebDataset (wds) shards")


TRAINING_FORMATS = ("wds", "parquet")
"""The formats training reads: WebDataset (audio) and Parquet (tokenizer texts, when all are there)."""


def check_shards(release: Release, langs: list[str] | None = None, *, checksums: bool = True, jobs: int = 4,
                 progress: bool = False) -> int:
    """The number of shards training reads (:data:`TRAINING_FORMATS` of ``langs``), checked as ``granary verify``
    does (size, then sha256 unless ``checksums`` is false); a ``ValueError`` names every missing or damaged one
    (a missing Parquet shard is allowed: a WebDataset-only download)."""
    from granary_pipe.io.verify import verify_release

    shards = {e["path"]: e["format"] for e in release.info.get("shards", []) if e.get("format") in TRAINING_FORMATS}
    report = verify_release(release.root, langs, TRAINING_FORMATS, jobs=jobs, progress=progress, checksums=checksums)
    problems = {**{p: "missing" for p in report.missing if shards.get(p) == "wds"},
                **{p: why for p, why in report.bad.items() if p in shards}}  # not the top files: training reads none
    checked = sum(p in shards for p in (*report.ok, *report.missing, *report.bad))
    if problems:
        shown = [f"  {path}: {why}" for path, why in sorted(problems.items())]
        more = [f"  ... and {len(shown) - 10} more"] if len(shown) > 10 else []
        raise ValueError(f"{release.root}: {len(problems)} of {checked} shards that training reads are missing "
                         f"or damaged (nothing was trained; `granary verify {release.root}` checks every file, "
                         "then download or cut the release again):\n" + "\n".join(shown[:10] + more))
    return checked


def open_release(data: str | Path) -> Release:
    """A local release directory (or its ``release.json``); URLs go through :func:`fetch_release` first."""
    if is_url(data):
        raise ValueError(f"{data}: a URL; fetch it with fetch_release() (granary train does) and pass the directory")
    root = Path(data)
    if root.name == "release.json":
        root = root.parent
    path = root / "release.json"
    if not path.is_file():
        raise FileNotFoundError(f"not a release: {path} does not exist")
    info = json.loads(path.read_text(encoding="utf-8"))
    _require_wds(info, path)
    return Release(root.resolve(), info)


def is_held_out(row_id: str, pct: float) -> bool:
    """Whether ``row_id`` is held out at ``pct`` percent (0-100), by a hash of the id alone: independent of shards,
    order and seed."""
    return _hash64(HELD_OUT_SALT, row_id) % 10000 < round(pct * 100)


def split_info(cfg: DataConfig) -> dict[str, Any]:
    """The split's definition, stored in checkpoints."""
    return {"method": "row-hash", "hash": f"sha256('{HELD_OUT_SALT}\\0' + id)[:8] big-endian mod 10000",
            "held_out_below": round(cfg.held_out_pct * 100), "held_out_pct": cfg.held_out_pct}


def in_split(row_id: str, split: str, pct: float) -> bool:
    """Whether ``row_id`` is in ``split`` (``"all"``, ``"heldout"`` or the rest) at ``pct`` percent held out."""
    if split == "all":
        return True
    held = is_held_out(row_id, pct)
    return held if split == "heldout" else not held


def _keep(meta: dict, cfg: DataConfig, split: str, langs: list[str] | None) -> bool:
    dur = meta.get("duration_s")
    return (
        meta.get("text") is not None
        and dur is not None
        and cfg.min_duration_s <= dur <= cfg.max_duration_s
        and (langs is None or meta.get("lang") in langs)
        and in_split(meta["id"], split, cfg.held_out_pct)
        and bool(normalize_text(meta["text"], cfg.text_norm))
    )


def _with_meta(sample: dict) -> dict:
    meta = json.loads(sample["json"])
    meta.setdefault("id", sample["__key__"])
    return {"key": sample["__key__"], "flac": sample["flac"], "meta": meta}


def _hash64(*parts: int | str) -> int:
    """The first 8 bytes (big-endian) of the sha256 of ``parts`` joined by NUL."""
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:8], "big")


def sample_stream(release: Release, cfg: DataConfig, *, split: str, seed: int = 0, epoch: int = 0,
                  rank: int = 0, world: int = 1, shuffle: bool = True) -> Iterator[dict]:
    """Samples ``{"key", "flac", "meta"}`` of ``split`` in one epoch. Shards are shuffled by ``(seed, epoch)``, the
    same order on every rank, and rank ``r`` reads shards ``r::world`` of it (disjoint across ranks), its samples
    shuffled by ``(seed, epoch, rank)``; with fewer shards than ranks every rank reads all shards, shuffles the
    samples by ``(seed, epoch)`` alike and keeps samples ``r::world``. ``shuffle=False``: release order."""
    import webdataset as wds

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    langs = cfg.langs
    shards = [str(p) for p in release.shards("wds", langs)]
    if not shards:
        raise ValueError(f"{release.root}: no wds shards for languages {langs}")
    if shuffle:
        random.Random(_hash64(seed, epoch, "shards")).shuffle(shards)
    by_shard = len(shards) >= world
    if by_shard:
        shards = shards[rank::world]
    stages: list = [
        wds.SimpleShardList(shards),
        wds.tarfile_to_samples(),
        wds.map(_with_meta),
        wds.select(lambda s: _keep(s["meta"], cfg, split, langs)),
    ]
    if shuffle and cfg.shuffle_buffer > 1:
        stages.append(wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer,
                                  seed=_hash64(seed, epoch, rank if by_shard else 0, "samples")))
    for j, sample in enumerate(wds.DataPipeline(*stages)):
        if by_shard or j % world == rank:
            yield sample


def bucket_batches(samples: Iterator[dict], cfg: DataConfig) -> Iterator[list[dict]]:
    """Batches of one duration bucket each, of ``min(max_batch_size, max_batch_s // bucket_upper_s)`` samples
    (leftovers at the end)."""
    uppers = list(cfg.bucket_boundaries_s)
    if cfg.max_duration_s > uppers[-1]:
        uppers.append(cfg.max_duration_s)
    caps = [max(1, min(cfg.max_batch_size, int(cfg.max_batch_s // u))) for u in uppers]
    buckets: list[list[dict]] = [[] for _ in uppers]
    for s in samples:
        d = s["meta"]["duration_s"]
        b = next((k for k, u in enumerate(uppers) if d <= u), len(uppers) - 1)
        buckets[b].append(s)
        if len(buckets[b]) >= caps[b]:
            yield buckets[b]
            buckets[b] = []
    for bucket in buckets:
        if bucket:
            yield bucket


def collate(items: list[tuple[np.ndarray, list[int]]], meta: list[dict]) -> dict[str, Any]:
    """The batch dict the loop consumes: waveforms zero-padded to the longest, targets concatenated."""
    lens = [len(w) for w, _ in items]
    waves = torch.zeros(len(items), max(lens), dtype=torch.float32)
    for i, (w, _) in enumerate(items):
        waves[i, : len(w)] = torch.from_numpy(w)
    wave_lens = torch.tensor(lens, dtype=torch.int64)
    targets = [t for _, t in items]
    return {
        "waves": waves,
        "wave_lens": wave_lens,
        "feat_lens": frame_counts(wave_lens),
        "targets": torch.tensor([x for t in targets for x in t], dtype=torch.int64),
        "target_lens": torch.tensor([len(t) for t in targets], dtype=torch.int64),
        "ids": [m["id"] for m in meta],
        "langs": [m.get("lang") for m in meta],
        "texts": [m["text"] for m in meta],
        "audio_s": float(sum(m["duration_s"] for m in meta)),
    }


class ReleaseBatches(torch.utils.data.IterableDataset):
    """One rank's batches from ``(epoch, start)`` on, for ``epochs`` epochs (``None``: forever, in the
    same loader workers). Each also carries ``epoch``, ``index`` (within its epoch) and ``decode_s``
    (worker seconds spent decoding and tokenising it)."""

    def __init__(self, release: Release, cfg: DataConfig, tokenizer: Tokenizer, *, split: str = "train",
                 seed: int = 0, epoch: int = 0, start: int = 0, rank: int = 0, world: int = 1, shuffle: bool = True,
                 limit: int | None = None, targets: bool = True, epochs: int | None = 1):
        super().__init__()
        self.release, self.cfg, self.tokenizer = release, cfg, tokenizer
        self.split, self.seed, self.epoch, self.start = split, seed, epoch, start
        self.rank, self.world, self.shuffle, self.limit = rank, world, shuffle, limit
        self.targets, self.epochs = targets, epochs

    def plans(self, epoch: int) -> Iterator[tuple[int, list[dict]]]:
        """``(index, samples)`` of every batch of ``epoch`` (metadata only, nothing decoded)."""
        stream = sample_stream(self.release, self.cfg, split=self.split, seed=self.seed, epoch=epoch,
                               rank=self.rank, world=self.world, shuffle=self.shuffle)
        if self.limit is not None:
            stream = itertools.islice(stream, self.limit)
        return enumerate(bucket_batches(stream, self.cfg))

    def _target(self, meta: dict) -> list[int]:
        if not self.targets:
            return []
        text = normalize_text(meta["text"], self.cfg.text_norm)
        return self.tokenizer.encode(text, meta.get("lang"), normalized=True)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, start, k = self.epoch, self.start, 0
        while self.epochs is None or epoch < self.epoch + self.epochs:
            n = 0
            for index, plan in self.plans(epoch):
                n += 1
                if index < start:
                    continue
                k += 1
                if (k - 1) % nw != wid:
                    continue
                t0 = time.perf_counter()
                items = [(decode_flac(s["flac"]), self._target(s["meta"])) for s in plan]
                batch = collate(items, [s["meta"] for s in plan])
                batch.update(epoch=epoch, index=index, decode_s=time.perf_counter() - t0)
                yield batch
            if n == 0 and self.epochs is None:
                raise ValueError(f"{self.release.root}: no {self.split} rows for rank {self.rank} (languages "
                                 f"{self.cfg.langs}, {self.cfg.min_duration_s}-{self.cfg.max_duration_s} s)")
            epoch, start = epoch + 1, 0


def make_loader(dataset: ReleaseBatches, workers: int, prefetch: int = 4, seed: int = 0, pin_memory: bool = False):
    """A DataLoader over ``dataset`` (already batched) with its own generator: the global torch RNG,
    saved in checkpoints, stays a function of the steps taken."""
    kw: dict[str, Any] = {"prefetch_factor": prefetch} if workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed), **kw,
    )


def iterate_epochs(release: Release, cfg: DataConfig, tokenizer: Tokenizer, *, seed: int,
                   epoch: int, start: int, rank: int, world: int,
                   pin_memory: bool = False) -> Generator[dict[str, Any], None, None]:
    """Training batches from ``(epoch, start)`` on, forever (one DataLoader across epochs)."""
    ds = ReleaseBatches(release, cfg, tokenizer, split="train", seed=seed, epoch=epoch,
                        start=start, rank=rank, world=world, epochs=None)
    yield from make_loader(ds, cfg.loader_workers, cfg.prefetch_batches, _hash64(seed, rank) % 2**63,
                           pin_memory=pin_memory)


def training_texts(release: Release, cfg: DataConfig) -> dict[str, list[str]]:
    """Normalised transcripts of the training split by language, in release order (from the Parquet
    shards when all are local, else the WebDataset ``.json`` entries)."""
    import pyarrow.parquet as pq

    out: dict[str, list[str]] = {}
    parquet = release.shards("parquet", cfg.langs)
    if parquet and all(p.is_file() for p in parquet):
        metas = (row for p in parquet
                 for row in pq.read_table(p, columns=["id", "lang", "text", "duration_s"]).to_pylist())
    else:
        metas = (s["meta"] for s in sample_stream(release, cfg, split="train", shuffle=False))
    for meta in metas:
        if _keep(meta, cfg, "train", cfg.langs):
            out.setdefault(meta.get("lang") or "und", []).append(normalize_text(meta["text"], cfg.text_norm))
    if not out:
        raise ValueError(f"{release.root}: no training transcripts (languages {cfg.langs})")
    return out


def batch_seed(seed: int, epoch: int, index: int, rank: int) -> int:
    """Seed of a batch's SpecAugment generator."""
    return _hash64(seed, epoch, index, rank, "specaug") % 2**63

