"""Training checkpoints: save (atomic, ``checkpoints/latest`` written last, old ones pruned), find and load
them, check a resume's config, and the RNG states (python, numpy, torch, cuda) each records per rank."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from granary_pipe.rundir import atomic_path, write_bytes_atomic
from granary_pipe.train.config import TrainConfig

CKPT_FORMAT = "granary_pipe.train/1"
_MUST_MATCH = ("seed", "model", "data", "tokenizer", "optim", "schedule")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_plain(obj):
    return [_to_plain(x) for x in obj] if isinstance(obj, (list, tuple)) else obj


def _to_tuple(obj):
    return tuple(_to_tuple(x) for x in obj) if isinstance(obj, list) else obj


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": np.array(n["key"], dtype=np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(path: str | Path) -> Path | None:
    """A checkpoint file, or the newest one of a training directory (``checkpoints/latest``)."""
    path = Path(path)
    if path.is_file():
        return path
    for d in (path / "checkpoints", path):
        pointer = d / "latest"
        if pointer.is_file():
            ckpt = d / pointer.read_text(encoding="utf-8").strip()
            if ckpt.is_file():
                return ckpt
    return None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Read a checkpoint (``weights_only``: plain data and tensors only)."""
    ckpt_path = latest_checkpoint(path)
    if ckpt_path is None:
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    if ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{ckpt_path}: not a granary_pipe training checkpoint ({ckpt.get('format')!r})")
    ckpt["path"] = str(ckpt_path)
    return ckpt


def save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    d = Path(out) / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{state['step']:08d}.pt"
    with atomic_path(d / name) as tmp:
        torch.save(state, tmp)
    write_bytes_atomic(d / "latest", (name + "\n").encode("utf-8"))
    for old in sorted(d.glob("ckpt-*.pt"))[:-keep]:
        old.unlink()
    return d / name


def check_compatible(cfg: TrainConfig, saved: dict, path: str) -> None:
    now = cfg.model_dump(mode="json")
    diff = [k for k in _MUST_MATCH if now[k] != saved[k]]
    if diff:
        raise ValueError(f"{path}: cannot resume with a different {', '.join(diff)} config than the checkpoint's "
                         "(use a new --out, or the checkpoint's config)")
