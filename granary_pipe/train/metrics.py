"""Training metrics: ``metrics.jsonl`` (one JSON record a line) and TensorBoard scalars."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLog:
    """metrics.jsonl + TensorBoard, rank 0 only; on resume both are cut back to ``step``."""

    def __init__(self, out: Path, enabled: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.path = Path(out) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            keep = [ln for ln in self.path.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
        elif resume_step is None:  # a fresh run: nothing from an earlier attempt survives
            self.path.unlink(missing_ok=True)
            shutil.rmtree(Path(out) / "tb", ignore_errors=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tb"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)
        except ImportError:  # tensorboard not installed: JSONL only
            log.warning("tensorboard is not installed: metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (and its numbers as TensorBoard scalars)."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = record["kind"]
            for k, v in record.items():
                if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(out: str | Path, kind: str | None = "train") -> list[dict[str, Any]]:
    """Records of ``out/metrics.jsonl`` (of one ``kind``, or all with ``None``)."""
    path = Path(out) / "metrics.jsonl"
    rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]
