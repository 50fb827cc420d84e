"""``segment.pyannote`` (the ``[diarize]`` extra): one row per single-speaker segment, ``speaker`` set;
pyannote and torch are imported in ``setup()`` only. Design: docs/architecture.md, "Data flow"."""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
import warnings
from itertools import groupby, pairwise, zip_longest
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, PrivateAttr

from granary_pipe import models, schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.segment.rows import merge_regions, segment_rows

MISSING_EXTRA = "segment.pyannote needs the [diarize] extra: make diarize-env"

Turn = tuple[int, int, str]
"""``(start, end, speaker)``; start/end in one unit (samples in the stage), end > start."""


def exclusive_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Possibly overlapping turns made exclusive, sorted by time: the speaker already talking keeps
    the floor; when nobody is, the one who started first (then the smaller label) gets it."""
    events: dict[int, list[tuple[int, str]]] = {}
    for start, end, spk in turns:
        if end > start:
            events.setdefault(start, []).append((+1, spk))
            events.setdefault(end, []).append((-1, spk))
    times = sorted(events)
    active: dict[str, int] = {}  # speaker → number of open turns
    since: dict[str, int] = {}  # speaker → when they became active
    pieces: list[Turn] = []
    current: str | None = None
    for t, t_next in zip_longest(times, times[1:]):  # t_next None after the last
        for delta, spk in sorted(events[t], key=lambda e: e[0]):  # closes before opens
            n = active.get(spk, 0) + delta
            if n > 0:
                if spk not in active:
                    since[spk] = t
                active[spk] = n
            else:
                active.pop(spk, None)
                since.pop(spk, None)
        if t_next is None or not active:
            current = None
            continue
        if current not in active:
            current = min(active, key=lambda s: (since[s], s))
        if pieces and pieces[-1][2] == current and pieces[-1][1] == t:
            pieces[-1] = (pieces[-1][0], t_next, current)
        else:
            pieces.append((t, t_next, current))
    return pieces


def split_long(start: int, end: int, max_len: int) -> list[tuple[int, int]]:
    """Cut ``[start, end)`` into the fewest equal integer parts of length ≤ ``max_len``."""
    n = max(1, math.ceil((end - start) / max_len))
    bounds = [start + ((end - start) * k) // n for k in range(n + 1)]
    return list(pairwise(bounds))


def turns_to_segments(turns: Iterable[Turn], max_len: int, max_gap: int = 0, min_len: int = 0) -> list[Turn]:
    """Speaker turns (any order, possibly overlapping) → single-speaker segments, sorted, never
    overlapping, each ≤ ``max_len``: pieces under ``min_len`` dropped, longer ones cut into equal
    parts, then a speaker's consecutive pieces merged while the span stays ≤ ``max_len`` and the
    pause ≤ ``max_gap``."""
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    pieces: list[Turn] = []
    for start, end, spk in exclusive_turns(turns):
        if end - start >= max(min_len, 1):
            pieces += [(s, e, spk) for s, e in split_long(start, end, max_len)]
    return [(s, e, spk) for spk, run in groupby(pieces, key=lambda p: p[2])
            for s, e in merge_regions([(s, e) for s, e, _ in run], max_len, max_gap)]


def name_speakers(segments: list[Turn]) -> list[Turn]:
    """Rename speakers ``SPEAKER_00``, ``SPEAKER_01``, ... in order of first appearance."""
    names: dict[str, str] = {}
    for _, _, spk in segments:
        names.setdefault(spk, f"SPEAKER_{len(names):02d}")
    return [(s, e, names[spk]) for s, e, spk in segments]


def stitch_chunks(chunks: np.ndarray, shift_frames: int) -> np.ndarray:
    """Local speakers of consecutive overlapping chunks (``(chunk, frame, speaker)``, each chunk
    ``shift_frames`` after the previous) permuted to best match the previous chunk on their overlap."""
    from pyannote.audio.utils.permutation import permutate

    out = np.array(chunks, dtype=np.float32, copy=True)
    num_chunks, num_frames, _ = out.shape
    overlap = num_frames - shift_frames
    if overlap <= 0 or shift_frames <= 0:
        return out
    for c in range(1, num_chunks):
        _, (perm,) = permutate(out[c - 1 : c, shift_frames:], out[c, :overlap])
        out[c] = out[c][:, list(perm)]
    return out


def _import_pyannote() -> None:
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # no telemetry unless asked for
    try:
        with warnings.catch_warnings():
            # audio always reaches pyannote as an in-memory waveform, so torchcodec is not needed
            warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed", category=UserWarning)
            import pyannote.audio  # noqa: F401
            import torch  # noqa: F401
    except (ImportError, OSError) as exc:
        raise ImportError(f"{MISSING_EXTRA} ({type(exc).__name__}: {exc})") from exc


def _waveform(audio: np.ndarray) -> dict[str, Any]:
    import torch

    return {"waveform": torch.from_numpy(np.array(audio, dtype=np.float32))[None],
            "sample_rate": schema.SAMPLE_RATE_HZ}


class _PipelineRunner:
    """A pyannote ``Pipeline`` (speaker diarization): turns clustered over the recording."""

    def __init__(self, path: Path, device: str, exclusive: bool, call_kwargs: dict[str, int]):
        import torch
        from pyannote.audio import Pipeline

        pipeline = Pipeline.from_pretrained(path)
        if pipeline is None:
            raise models.ModelNotFound(f"pyannote could not load a pipeline from {path}")
        pipeline.to(torch.device(device))
        self.pipeline = pipeline
        self.exclusive = exclusive
        self.call_kwargs = call_kwargs

    def turns(self, audio: np.ndarray) -> list[tuple[float, float, str]]:
        output = self.pipeline(_waveform(audio), **self.call_kwargs)
        annotation = output
        if self.exclusive and hasattr(output, "exclusive_speaker_diarization"):
            annotation = output.exclusive_speaker_diarization  # pyannote 4: no overlapping turns
        elif hasattr(output, "speaker_diarization"):
            annotation = output.speaker_diarization
        elif isinstance(output, tuple):  # e.g. speech separation: (diarization, sources)
            annotation = output[0]
        if not hasattr(annotation, "itertracks"):
            raise TypeError(f"pyannote pipeline returned {type(output).__name__}, not speaker turns")
        return [(seg.start, seg.end, str(label)) for seg, _, label in annotation.itertracks(yield_label=True)]


class _ModelRunner:
    """A bare segmentation ``Model``: local-speaker activity, stitched across chunks, thresholded."""

    def __init__(self, path: Path, device: str, threshold: float, step: float, batch_size: int):
        import torch
        from pyannote.audio import Inference, Model
        from pyannote.audio.core.task import Resolution
        from pyannote.audio.utils.signal import Binarize

        model = Model.from_pretrained(path, strict=False)
        if model is None:
            raise models.ModelNotFound(f"pyannote could not load a model from {path}")
        spec = model.specifications
        if isinstance(spec, tuple) or spec.resolution != Resolution.FRAME:
            raise ValueError(f"{path}: segment.pyannote needs a frame-level segmentation model, got {spec}")
        step_s = step * spec.duration
        shift_frames = int(round(step_s / model.receptive_field.step))
        self.inference = Inference(
            model, duration=spec.duration, step=step_s, batch_size=batch_size, device=torch.device(device),
            pre_aggregation_hook=lambda chunks: stitch_chunks(chunks, shift_frames))
        self.binarize = Binarize(onset=threshold, offset=threshold)

    def turns(self, audio: np.ndarray) -> list[tuple[float, float, str]]:
        scores = self.inference(_waveform(audio))
        if scores.data.shape[0] < 2:  # Binarize needs two frames (a few ms of audio)
            return []
        active = self.binarize(scores)
        return [(seg.start, seg.end, f"SPEAKER_{int(label):02d}")
                for seg, _, label in active.itertracks(yield_label=True)]


@register("segment.pyannote")
class PyannoteSegment(Stage):
    """Recording rows → single-speaker segment rows (≤ ``max_segment_s``), ``speaker`` set."""

    actor = True
    RULES: ClassVar[tuple[str, ...]] = ("segment:no_speech", "segment:no_audio")

    model: str = Field(
        "pyannote-speaker-diarization-community-1",
        description="local pyannote pipeline (dir with config.yaml, or the yaml) or segmentation "
                    "checkpoint (pytorch_model.bin, or its dir); a path or a registry name")
    kind: Literal["auto", "pipeline", "model"] = Field(
        "auto", description="what `model` is; auto: config.yaml/.yaml → pipeline, else checkpoint → model")
    max_segment_s: float = Field(30.0, gt=1, le=30, description="Whisper sees 30 s at most")
    max_merge_gap_s: float = Field(2.0, ge=0, description="longest pause merged inside one speaker's segment")
    min_segment_s: float = Field(0.25, ge=0, description="shorter speaker pieces are dropped")
    # pipeline only
    exclusive: bool = Field(True, description="use the pipeline's exclusive (no-overlap) diarization when it has one")
    num_speakers: int | None = Field(None, ge=1, description="known number of speakers (pipeline models only)")
    min_speakers: int | None = Field(None, ge=1, description="at least this many speakers (pipeline models only)")
    max_speakers: int | None = Field(None, ge=1, description="at most this many speakers (pipeline models only)")
    # bare segmentation model only
    threshold: float = Field(0.5, ge=0, le=1, description="speaker activity threshold (1.0: never active)")
    segmentation_step: float = Field(0.1, gt=0, le=1, description="chunk step, as a fraction of the chunk duration")
    inference_batch_size: int = Field(32, ge=1, description="audio chunks per segmentation-model forward pass")
    # runtime
    device: str = Field("auto", description="torch device; auto: cuda when available, else cpu")
    cpu_threads: int = Field(0, ge=0, description="torch intra-op threads (0: torch's default)")
    batch_size: int = 4

    _runner: Any = PrivateAttr(default=None)

    def models(self) -> list[str]:
        return [self.model]

    def run_info(self) -> dict[str, Any]:
        """For ``run.json``: pyannote's version, which kind of model runs, and what labels mean."""
        try:
            version: str | None = importlib.metadata.version("pyannote.audio")
        except importlib.metadata.PackageNotFoundError:
            version = None
        info: dict[str, Any] = {"pyannote.audio": version}
        try:
            kind, file = self.locate(models.resolve(self.model))
        except models.ModelNotFound as exc:
            return {**info, "model_error": str(exc)}
        labels = ("clustered over the recording" if kind == "pipeline"
                  else "local speakers stitched across overlapping chunks, not clustered")
        return {**info, "kind": kind, "file": str(file), "speaker_labels": labels}

    def locate(self, path: Path) -> tuple[str, Path]:
        """``("pipeline", config.yaml)`` or ``("model", checkpoint)`` for a resolved model path."""
        files = {"pipeline": "config.yaml", "model": "pytorch_model.bin"}
        if path.is_dir():
            kinds = [self.kind] if self.kind != "auto" else ["pipeline", "model"]
            for kind in kinds:
                if (path / files[kind]).is_file():
                    return kind, path / files[kind]
            wanted = " nor ".join(f"{files[k]} ({k})" for k in kinds)
            raise models.ModelNotFound(f"{path} holds neither {wanted}" if len(kinds) > 1
                                       else f"{path} holds no {wanted}")
        if self.kind != "auto":
            return self.kind, path
        return ("pipeline" if path.suffix.lower() in (".yaml", ".yml") else "model"), path

    def setup(self) -> None:
        _import_pyannote()
        import torch

        try:
            path = models.resolve(self.model)
        except models.ModelNotFound as exc:
            env = "GRANARY_MODEL_" + re.sub(r"[^A-Za-z0-9]", "_", self.model).upper()
            raise models.ModelNotFound(f"{exc} (segment.pyannote: give a local path, or set {env})") from exc
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        device = self.device if self.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
        kind, file = self.locate(path)
        if kind == "pipeline":
            call_kwargs = {k: v for k in ("num_speakers", "min_speakers", "max_speakers")
                           if (v := getattr(self, k)) is not None}
            self._runner = _PipelineRunner(file, device, self.exclusive, call_kwargs)
        else:
            self._runner = _ModelRunner(file, device, self.threshold, self.segmentation_step,
                                        self.inference_batch_size)

    def speaker_turns(self, audio: np.ndarray) -> list[tuple[float, float, str]]:
        """``(start_s, end_s, speaker)`` turns of one 16 kHz recording, as pyannote gives them."""
        if self._runner is None:
            self.setup()
        return self._runner.turns(audio)

    def segments(self, audio: np.ndarray) -> list[Turn]:
        """Single-speaker segments of one recording, in samples, speakers named by first appearance."""
        sr = schema.SAMPLE_RATE_HZ
        min_len = int(self.min_segment_s * sr)
        if audio.size < max(1, min_len):  # no segment could be kept: no need to ask the model
            return []
        turns = []
        for start_s, end_s, spk in self.speaker_turns(audio):
            start, end = max(0, round(start_s * sr)), min(audio.size, round(end_s * sr))
            if end > start:
                turns.append((start, end, spk))
        segments = turns_to_segments(turns, max_len=int(self.max_segment_s * sr),
                                     max_gap=int(self.max_merge_gap_s * sr), min_len=min_len)
        return name_speakers(segments)

    def process(self, active: pa.Table) -> pa.Table:
        out = []
        for row in active.to_pylist():
            if row["samples"] is None:
                row["drop_reason"] = "segment:no_audio"
                out.append(row)
                continue
            audio = np.frombuffer(row["samples"], dtype=np.float32)
            spans = self.segments(audio)
            out += segment_rows(row, [(start, end) for start, end, _ in spans], audio,
                                speakers=[speaker for _, _, speaker in spans])
        return schema.make_table(out, with_samples=True)
