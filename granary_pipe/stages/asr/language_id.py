"""``asr.language_id`` (pass 1): spoken-language ID per recording over several speech windows.
Design: docs/architecture.md, "Data flow" (asr.language_id)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from granary_pipe import schema
from granary_pipe.models import ModelLicenses
from granary_pipe.models import refs as model_refs
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.asr import lid_resolve, whisper_runtime
from granary_pipe.stages.asr.lid_resolve import LidResolve

LID_RULES = ("lang:low_confidence", "lang:no_agreement", "lang:unsupported",
             "lang:confirmed", "lang:resolved", "lang:hint", "lang:text_disagrees", "lang:best_logprob")
"""Reasons pass 1 rejects a recording for, then the flags of a resolution (``lang:resolved:cs->sk`` counts
under ``lang:resolved``)."""


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when n ≤ k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n // 2]


def average(probs: list[dict[str, float]], weights: list[float]) -> dict[str, float]:
    """Weighted mean of per-window language distributions."""
    total: dict[str, float] = defaultdict(float)
    for p, w in zip(probs, weights, strict=True):
        for lang, value in p.items():
            total[lang] += w * value
    norm = sum(weights) or 1.0
    return {lang: value / norm for lang, value in total.items()}


class LanguageIDOptions(BaseModel):
    """Pass 1's options, shared by ``asr.language_id`` and ``asr.two_pass``."""

    lid_model: str = Field("whisper-base", description="multilingual Whisper model (registry name or path)")
    windows: int = Field(3, ge=1, le=16, description="speech windows per recording")
    min_prob: float = Field(
        0.5, ge=0, le=1, description="reject as lang:low_confidence below this averaged probability")
    allowed_langs: list[str] | None = Field(None, description="reject other languages as lang:unsupported")
    resolve: LidResolve = Field(default_factory=LidResolve, description="how uncertain language IDs are resolved")


@register("asr.language_id")
class WhisperLanguageID(LanguageIDOptions, Stage):
    """Sets ``lang`` and ``lang_prob`` on every segment of a recording."""

    actor = True
    RULES: ClassVar[tuple[str, ...]] = LID_RULES

    device: str = Field("auto", description="CTranslate2 device: auto, cpu or cuda")
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8, int8_float16, float16, float32, ...")
    cpu_threads: int = Field(
        0, ge=0, description="CPU threads per worker; 0: the worker's CPU reservation (at least 1)")
    model_batch: int = Field(8, ge=1, description="speech windows per CTranslate2 call")
    model_licenses: ModelLicenses = Field(default_factory=dict, description="{model path: SPDX id} for a "
                                                 "model given by path; needed for a release")

    def models(self) -> list[str]:
        return model_refs(self.name, [self.lid_model], self.model_licenses)

    def setup(self) -> None:
        whisper_runtime.load(self.lid_model, self.device, self.compute_type, self.cpu_threads)

    def process(self, active: pa.Table) -> pa.Table:
        model = whisper_runtime.load(self.lid_model, self.device, self.compute_type, self.cpu_threads)
        rows = active.to_pylist()
        found = identify(rows, model, self.windows, self.model_batch, keep_encoded=self.resolve.enabled)
        decide(rows, found, model, self.min_prob, self.allowed_langs, self.resolve)
        return schema.make_table(rows, with_samples=True)


@dataclass
class Identified:
    """Per recording its averaged language distribution and its windows (row indices, longest first); per
    window row its encoder output (when kept)."""

    dists: dict[str, dict[str, float]]
    windows: dict[str, list[int]]
    encoded: dict[int, np.ndarray]


def _windows(rows: list[dict], windows: int) -> list[tuple[str, int, np.ndarray]]:
    """``(recording, row index, first 30 s of its audio)`` of up to ``windows`` segments per recording."""
    by_rec: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_rec[row["recording_id"]].append(i)
    jobs = []
    for rec, idx in by_rec.items():
        idx.sort(key=lambda i: rows[i]["offset_s"])
        for j in spread(len(idx), windows):
            audio = np.frombuffer(rows[idx[j]]["samples"], dtype=np.float32)
            jobs.append((rec, idx[j], audio[: 30 * schema.SAMPLE_RATE_HZ]))
    return jobs


def identify(rows: list[dict], model, windows: int, model_batch: int, keep_encoded: bool = False) -> Identified:
    """Language distribution of each recording in ``rows`` from up to ``windows`` speech windows;
    with ``keep_encoded`` each window's encoder output is kept (for pass 2 and resolution)."""
    jobs = _windows(rows, windows)
    probs: dict[str, list[dict[str, float]]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    found = Identified({}, defaultdict(list), {})
    encode = whisper_runtime.encode_to_host if keep_encoded else whisper_runtime.encode
    for k in range(0, len(jobs), model_batch):
        batch = jobs[k : k + model_batch]
        encoded = encode(model, [a for _, _, a in batch])
        for n, ((rec, i, audio), p) in enumerate(
                zip(batch, whisper_runtime.language_probs(model, encoded=encoded), strict=True)):
            probs[rec].append(p)
            seconds[rec].append(audio.size / schema.SAMPLE_RATE_HZ)
            found.windows[rec].append(i)
            if keep_encoded:
                found.encoded[i] = encoded[n]
    found.dists = {rec: average(probs[rec], seconds[rec]) for rec in probs}
    for idx in found.windows.values():
        idx.sort(key=lambda i: -(rows[i]["duration_s"] or 0.0))
    return found


def decide(rows: list[dict], found: Identified, model, min_prob: float, allowed_langs: list[str] | None,
           resolve: LidResolve) -> None:
    """Set ``lang``/``lang_prob`` on every row: the top audio language, resolved by candidate decodes
    where the audio is not enough (``resolve``); reject unresolved or unsupported languages."""
    text_lid = None
    decisions: dict[str, lid_resolve.Decision] = {}
    hints = {row["recording_id"]: lid_resolve.hint_code(row.get("lang_hint")) for row in rows}
    for rec, dist in found.dists.items():
        top = max(dist, key=dist.__getitem__)
        if resolve.enabled and lid_resolve.needs_resolution(dist, hints[rec], resolve, min_prob):
            text_lid = text_lid or lid_resolve.TextLID()
            windows = [found.encoded[i] for i in found.windows[rec][: resolve.windows]]
            decisions[rec] = lid_resolve.resolve(dist, hints[rec], windows, model, text_lid, resolve)
        else:
            low = dist[top] < min_prob
            decisions[rec] = lid_resolve.Decision(top, dist[top], "lang:low_confidence" if low else None)
    for row in rows:
        d = decisions[row["recording_id"]]
        reason = d.reason
        if reason is None and allowed_langs is not None and d.lang not in allowed_langs:
            reason = f"lang:unsupported:{d.lang}"
        row.update(lang=d.lang, lang_prob=d.prob, drop_reason=reason)
        if d.flags:
            row["flags"] = list(row.get("flags") or []) + d.flags
