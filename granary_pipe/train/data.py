"""Batches from a release: WebDataset shards → split → shuffle → duration buckets → features.

**Deterministic by construction.** The batch sequence of an epoch is a pure function of
(release, data config, seed, epoch, rank, world size):

1. the release's ``wds`` shards (``release.json``, languages from ``data.langs``) are put in
   an order shuffled by ``(seed, epoch)``; with at least as many shards as ranks, rank ``r``
   reads shards ``r::world``, else every rank reads all shards and keeps samples ``r::world``;
2. ``webdataset`` streams the tars; only the ``.json`` metadata is parsed here (the FLAC
   bytes ride along undecoded); rows of the other split, too short/long, or with an empty
   normalised text are skipped;
3. ``webdataset.shuffle`` (buffer ``shuffle_buffer``, seeded by ``(seed, epoch, rank)``);
4. duration buckets (``bucket_boundaries_s``): a bucket emits a batch when it holds
   ``min(max_batch_size, max_batch_s // bucket_upper_s)`` samples, so a batch never pads
   to more than ``max_batch_s`` seconds; leftovers are emitted at the end of the epoch;
5. counting batches from the start position on (across epochs: the loader workers go on
   into the next epoch without restarting), batch ``k`` is decoded (FLAC → 16 kHz float32 →
   80-dim log-mel) and tokenised by DataLoader worker ``k % workers``; PyTorch's DataLoader
   returns worker outputs round-robin, so batches arrive in stream order.

**Resume.** The data position is ``(epoch, next batch index)`` per rank. Resuming rebuilds the
epoch's stream and skips ``start`` batches at step 4, before any audio is decoded: skipping
costs reading the tars, not decoding them.

**Held-out split.** A row is held out when ``sha256("heldout\\0" + id)`` (first 8 bytes,
big-endian) mod 10000 < ``held_out_pct`` × 100: per row, independent of shards, order,
seed and of which other rows exist; recorded in each checkpoint (:func:`split_info`).

**Features.** ``faster_whisper.feature_extractor.FeatureExtractor`` (numpy): 25 ms Hann
window, 10 ms hop, Slaney mel filterbank, log10, dynamic range clamped to 8 (log10 units)
below the utterance's maximum, scaled ``(x + 4) / 4`` (Whisper's features, without padding to
30 s). No torchaudio (its PyPI wheel does not import beside this torch), no hand-written
filterbank. SpecAugment runs on the batch tensor in the training process
(:func:`spec_augment`), seeded per batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from granary_pipe.schema import SAMPLE_RATE_HZ
from granary_pipe.train.config import DataConfig, SpecAugmentConfig
from granary_pipe.train.tokenizer import Tokenizer, normalize_text

HELD_OUT_SALT = "heldout"
SPLITS = ("train", "heldout", "all")


# ----------------------------------------------------------------------------- release

@dataclass(frozen=True)
class Release:
    """A local release directory and its ``release.json``."""

    root: Path
    info: dict[str, Any]

    @property
    def langs(self) -> list[str]:
        return sorted(self.info.get("totals", {}).get("per_lang", {}))

    def shards(self, fmt: str, langs: list[str] | None = None) -> list[Path]:
        """Absolute paths of the ``fmt`` (``wds``/``parquet``) shards, sorted, optionally by language."""
        out = [self.root / s["path"] for s in self.info["shards"]
               if s.get("format") == fmt and (langs is None or s.get("lang") in langs)]
        return sorted(out)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint records about the data: path, run name, sha256 of release.json."""
        digest = hashlib.sha256((self.root / "release.json").read_bytes()).hexdigest()
        return {"root": str(self.root), "created_from": self.info.get("created_from"),
                "release_json_sha256": digest, "rows": self.info.get("totals", {}).get("rows")}


def is_url(data: str | Path) -> bool:
    return "://" in str(data)


def fetch_release(url: str, dest: str | Path, *, langs: list[str] | None = None, progress: bool = True) -> Path:
    """Download the ``wds`` shards of the release at ``url`` into ``dest`` (verified, resumable,
    skipping files already there) with :func:`granary_pipe.io.download.download_release`."""
    from granary_pipe.io.download import download_release

    report = download_release(url, dest, langs=langs, formats=["wds"], progress=progress)
    if not report.passed:
        raise RuntimeError(f"download of {url} incomplete:\n{report.summary()}")
    return Path(dest)


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
    if not any(s.get("format") == "wds" for s in info.get("shards", [])):
        raise ValueError(f"{path}: the release has no WebDataset (wds) shards")
    return Release(root.resolve(), info)


def is_held_out(row_id: str, pct: float) -> bool:
    """Whether ``row_id`` belongs to the held-out split at ``pct`` percent (see module doc)."""
    h = hashlib.sha256(f"{HELD_OUT_SALT}\0{row_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") % 10000 < round(pct * 100)


def split_info(cfg: DataConfig) -> dict[str, Any]:
    """The split's definition, stored in checkpoints."""
    return {"method": "row-hash", "hash": f"sha256('{HELD_OUT_SALT}\\0' + id)[:8] big-endian mod 10000",
            "held_out_below": round(cfg.held_out_pct * 100), "held_out_pct": cfg.held_out_pct}


def in_split(row_id: str, split: str, pct: float) -> bool:
    if split == "all":
        return True
    held = is_held_out(row_id, pct)
    return held if split == "heldout" else not held


# ----------------------------------------------------------------------------- metadata stream

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


def _rank_seed(*parts: int | str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:8], "big")


def sample_stream(release: Release, cfg: DataConfig, *, split: str, seed: int = 0, epoch: int = 0,
                  rank: int = 0, world: int = 1, shuffle: bool = True) -> Iterator[dict]:
    """Samples ``{"key", "flac", "meta"}`` of one epoch for one rank (steps 1–3 of the module doc)."""
    import webdataset as wds

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    langs = cfg.langs
    shards = [str(p) for p in release.shards("wds", langs)]
    if not shards:
        raise ValueError(f"{release.root}: no wds shards for languages {langs}")
    if shuffle:
        random.Random(_rank_seed(seed, epoch, "shards")).shuffle(shards)
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
                                  seed=_rank_seed(seed, epoch, rank if by_shard else 0, "samples")))
    for j, sample in enumerate(wds.DataPipeline(*stages)):
        if by_shard or j % world == rank:
            yield sample


def bucket_batches(samples: Iterator[dict], cfg: DataConfig) -> Iterator[list[dict]]:
    """Group samples by duration bucket; see step 4 of the module doc."""
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


# ----------------------------------------------------------------------------- audio + features

def decode_flac(data: bytes) -> np.ndarray:
    """16 kHz mono float32 from the release's FLAC bytes (PyAV fallback for other rates/layouts)."""
    import soundfile as sf

    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    if rate == SAMPLE_RATE_HZ and wave.shape[1] == 1:
        return wave[:, 0]
    from faster_whisper.audio import decode_audio

    return decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE_HZ)


def load_audio(path: str | Path) -> np.ndarray:
    """Any file FFmpeg reads → 16 kHz mono float32 (PyAV via faster_whisper)."""
    from faster_whisper.audio import decode_audio

    return decode_audio(str(path), sampling_rate=SAMPLE_RATE_HZ)


class Featurizer:
    """80-dim log-mel at 10 ms from faster-whisper's numpy feature extractor (module doc)."""

    def __init__(self, n_mels: int = 80):
        from faster_whisper.feature_extractor import FeatureExtractor

        self.n_mels = n_mels
        self._fe = FeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE_HZ)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """``(frames, n_mels)`` float32; ``frames = len(wave) // 160``."""
        return np.ascontiguousarray(self._fe(wave, padding=0).T, dtype=np.float32)


def collate(items: list[tuple[np.ndarray, list[int]]], meta: list[dict]) -> dict[str, Any]:
    """Pad features and concatenate targets into the batch dict the loop consumes."""
    import torch

    lens = [f.shape[0] for f, _ in items]
    feats = torch.zeros(len(items), max(lens), items[0][0].shape[1])
    for i, (f, _) in enumerate(items):
        feats[i, : f.shape[0]] = torch.from_numpy(f)
    targets = [t for _, t in items]
    return {
        "feats": feats,
        "feat_lens": torch.tensor(lens, dtype=torch.int64),
        "targets": torch.tensor([x for t in targets for x in t], dtype=torch.int64),
        "target_lens": torch.tensor([len(t) for t in targets], dtype=torch.int64),
        "ids": [m["id"] for m in meta],
        "langs": [m.get("lang") for m in meta],
        "texts": [m["text"] for m in meta],
        "audio_s": float(sum(m["duration_s"] for m in meta)),
    }


def _torch_dataset_base():
    import torch

    return torch.utils.data.IterableDataset


class ReleaseBatches(_torch_dataset_base()):
    """One rank's batches from position ``(epoch, start)`` on, for ``epochs`` epochs (``None``:
    forever, epoch after epoch in the same loader workers, so no epoch boundary restarts them).

    Batches are numbered from the start position on (``k = 0, 1, …`` across epochs); loader
    worker ``k % workers`` decodes batch ``k`` (module doc, step 5). Each yielded dict also carries
    ``epoch``, ``index`` (batch number within its epoch) and ``decode_s`` (worker seconds spent
    decoding + featurising it).
    """

    def __init__(self, release: Release, cfg: DataConfig, tokenizer: Tokenizer, *, n_mels: int = 80,
                 split: str = "train", seed: int = 0, epoch: int = 0, start: int = 0, rank: int = 0,
                 world: int = 1, shuffle: bool = True, limit: int | None = None, targets: bool = True,
                 epochs: int | None = 1):
        super().__init__()
        self.release, self.cfg, self.tokenizer, self.n_mels = release, cfg, tokenizer, n_mels
        self.split, self.seed, self.epoch, self.start = split, seed, epoch, start
        self.rank, self.world, self.shuffle, self.limit = rank, world, shuffle, limit
        self.targets, self.epochs = targets, epochs

    def plans(self, epoch: int) -> Iterator[tuple[int, list[dict]]]:
        """``(index, samples)`` of every batch of ``epoch`` (metadata only, nothing decoded)."""
        stream = sample_stream(self.release, self.cfg, split=self.split, seed=self.seed, epoch=epoch,
                               rank=self.rank, world=self.world, shuffle=self.shuffle)
        if self.limit is not None:
            stream = (s for j, s in zip(range(self.limit), stream))
        return enumerate(bucket_batches(stream, self.cfg))

    def _target(self, meta: dict) -> list[int]:
        if not self.targets:
            return []
        text = normalize_text(meta["text"], self.cfg.text_norm)
        return self.tokenizer.encode(text, meta.get("lang"), normalized=True)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        featurize = Featurizer(self.n_mels)
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
                items = [(featurize(decode_flac(s["flac"])), self._target(s["meta"])) for s in plan]
                batch = collate(items, [s["meta"] for s in plan])
                batch.update(epoch=epoch, index=index, decode_s=time.perf_counter() - t0)
                yield batch
            if n == 0 and self.epochs is None:
                raise ValueError(f"{self.release.root}: no {self.split} rows for rank {self.rank} (languages "
                                 f"{self.cfg.langs}, {self.cfg.min_duration_s}-{self.cfg.max_duration_s} s)")
            epoch, start = epoch + 1, 0


def make_loader(dataset: ReleaseBatches, workers: int, prefetch: int = 4, seed: int = 0, pin_memory: bool = False):
    """A DataLoader over ``dataset`` (already batched) that never touches the global torch RNG
    (its own generator: the training RNG state stays a function of the steps taken)."""
    import torch

    kw: dict[str, Any] = {"prefetch_factor": prefetch} if workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed), **kw,
    )


def iterate_epochs(release: Release, cfg: DataConfig, tokenizer: Tokenizer, *, n_mels: int, seed: int,
                   epoch: int, start: int, rank: int, world: int, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """Training batches from position ``(epoch, start)`` on, epoch after epoch, forever
    (one DataLoader: its workers run across epoch boundaries)."""
    ds = ReleaseBatches(release, cfg, tokenizer, n_mels=n_mels, split="train", seed=seed, epoch=epoch,
                        start=start, rank=rank, world=world, epochs=None)
    yield from make_loader(ds, cfg.loader_workers, cfg.prefetch_batches, _rank_seed(seed, rank) % 2**63,
                           pin_memory=pin_memory)


def training_texts(release: Release, cfg: DataConfig) -> dict[str, list[str]]:
    """Normalised transcripts of the training split by language (Parquet columns when the
    release has local Parquet shards, else the WebDataset ``.json`` entries), in release order."""
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


# ----------------------------------------------------------------------------- SpecAugment

def spec_augment(feats, lens, cfg: SpecAugmentConfig, generator):
    """Frequency and time masks (set to 0) on ``feats (B, T, F)``; masks stay inside each
    utterance's valid frames. ``generator``: a seeded ``torch.Generator`` (CPU)."""
    import torch

    b, t, f = feats.shape
    dev = feats.device
    mask = torch.zeros(b, t, f, dtype=torch.bool)

    def rand(n: int = b) -> torch.Tensor:
        return torch.rand(n, generator=generator)

    fr = torch.arange(f)[None, None, :]
    for _ in range(cfg.freq_masks):
        width = (rand() * (min(cfg.freq_width, f) + 1)).floor()
        f0 = (rand() * (f - width + 1)).floor()
        mask |= (fr >= f0[:, None, None]) & (fr < (f0 + width)[:, None, None])
    tr = torch.arange(t)[None, :, None]
    lens_f = lens.cpu().float()
    max_w = torch.minimum((lens_f * cfg.time_width_frac).floor(), torch.tensor(float(cfg.max_time_width)))
    for _ in range(cfg.time_masks):
        width = (rand() * (max_w + 1)).floor()
        t0 = (rand() * (lens_f - width + 1).clamp(min=1)).floor()
        mask |= (tr >= t0[:, None, None]) & (tr < (t0 + width)[:, None, None])
    return feats.masked_fill(mask.to(dev), 0.0)


def batch_seed(seed: int, epoch: int, index: int, rank: int) -> int:
    """Seed of a batch's SpecAugment generator."""
    return _rank_seed(seed, epoch, index, rank, "specaug") % 2**63

