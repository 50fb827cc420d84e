"""The CUDA 12 libraries CTranslate2 loads at run time, found and loaded before it needs them.

CTranslate2's PyPI wheels (4.x) are built against CUDA 12 and ``dlopen`` ``libcublas.so.12`` the
first time a model runs on a GPU. A machine whose driver and libraries are CUDA 13 (torch 2.11+
and vLLM bring CUDA 13 wheels) has no such file, and CTranslate2 then fails inside the first
``encode`` with an error that names neither the package nor the fix. The ``[gpu]`` extra installs
NVIDIA's CUDA 12 cuBLAS wheel (``nvidia-cublas-cu12``, into ``site-packages/nvidia/cublas/lib``);
:func:`preload` finds it there (or on the system's library path) and loads it with
``RTLD_GLOBAL`` before the model loads, so CTranslate2's ``dlopen`` by name finds the library
already in the process. When it is nowhere, :func:`preload` raises :class:`CudaLibraryMissing`
with one line naming the library and the extra.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CudaLibrary", "CUDA12_LIBRARIES", "CudaLibraryMissing", "find", "preload", "wants_cuda"]


@dataclass(frozen=True)
class CudaLibrary:
    """A shared library CTranslate2 loads by name, and the wheel that ships it."""

    soname: str
    wheel: str
    subdir: str  # under site-packages/nvidia/


# libcublasLt first: libcublas needs it, and the wheel's libcublas finds it by RPATH only when
# both come from the same directory; loading it explicitly works for system copies too.
CUDA12_LIBRARIES = (
    CudaLibrary("libcublasLt.so.12", "nvidia-cublas-cu12", "cublas"),
    CudaLibrary("libcublas.so.12", "nvidia-cublas-cu12", "cublas"),
)

EXTRA_HINT = "pip install 'granary_pipe[gpu]' (it brings nvidia-cublas-cu12)"


class CudaLibraryMissing(RuntimeError):
    """A CUDA library CTranslate2 needs on the GPU could not be found or loaded."""


def _wheel_dirs(lib: CudaLibrary, search: list[str] | None) -> list[Path]:
    roots = sys.path if search is None else search
    return [Path(root) / "nvidia" / lib.subdir / "lib" for root in roots if root]


def find(lib: CudaLibrary, search: list[str] | None = None) -> Path | None:
    """The wheel copy of ``lib`` on ``search`` (default ``sys.path``), or None."""
    for d in _wheel_dirs(lib, search):
        candidate = d / lib.soname
        if candidate.is_file():
            return candidate
    return None


def _load(target: str) -> None:
    ctypes.CDLL(target, mode=ctypes.RTLD_GLOBAL)


def preload(libraries: tuple[CudaLibrary, ...] = CUDA12_LIBRARIES, *, search: list[str] | None = None,
            system: bool = True) -> list[str]:
    """Load every library of ``libraries`` into the process; returns what was loaded (paths or
    sonames). A wheel copy wins; ``system`` falls back to the dynamic loader's own search.

    Raises :class:`CudaLibraryMissing` naming the first library that could not be loaded, where
    it was looked for, and the extra that installs it.
    """
    loaded: list[str] = []
    for lib in libraries:
        path = find(lib, search)
        target = str(path) if path is not None else lib.soname if system else None
        if target is None:
            raise CudaLibraryMissing(f"CTranslate2 on a GPU needs {lib.soname} (CUDA 12 cuBLAS), which is not "
                                     f"installed: {EXTRA_HINT}")
        try:
            _load(target)
        except OSError as exc:
            if path is None:
                raise CudaLibraryMissing(
                    f"CTranslate2 on a GPU needs {lib.soname} (CUDA 12 cuBLAS): no {lib.wheel} wheel on sys.path and "
                    f"not on the system library path: {EXTRA_HINT}") from None
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CudaLibraryMissing(f"CTranslate2 on a GPU needs {lib.soname}; loading {path} failed ({first}): "
                                     f"reinstall {lib.wheel}: {EXTRA_HINT}") from None
        loaded.append(target)
    return loaded


def wants_cuda(device: str) -> bool:
    """Whether a CTranslate2 ``device`` string will run on a GPU here (``auto``: a CUDA device exists)."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import ctranslate2

    try:
        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no driver: CPU
        return False
