"""The CUDA 12 libraries CTranslate2 loads at run time, loaded before it needs them or an error naming the
``[gpu]`` extra. Design: docs/architecture.md, "Data flow" (asr.whisper)."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

WHEEL = "nvidia-cublas-cu12"
# libcublasLt first: libcublas needs it, and the wheel's libcublas finds it by RPATH only when
# both come from the same directory; loading it explicitly works for system copies too.
CUDA12_LIBRARIES = ("libcublasLt.so.12", "libcublas.so.12")
EXTRA_HINT = f"pip install 'granary_pipe[gpu]' (it brings {WHEEL})"


class CudaLibraryMissing(RuntimeError):
    """A CUDA library CTranslate2 needs on the GPU could not be found or loaded."""


def find(soname: str, search: list[str] | None = None) -> Path | None:
    """The wheel copy of ``soname`` on ``search`` (default ``sys.path``), or None."""
    roots = sys.path if search is None else search
    candidates = (Path(root) / "nvidia" / "cublas" / "lib" / soname for root in roots if root)
    return next((c for c in candidates if c.is_file()), None)


def preload(libraries: tuple[str, ...] = CUDA12_LIBRARIES, *, search: list[str] | None = None,
            system: bool = True) -> list[str]:
    """Load ``libraries`` with ``RTLD_GLOBAL`` (a wheel copy first; with ``system`` the loader's own search);
    returns the paths or sonames loaded, or raises :class:`CudaLibraryMissing` naming the first missing one."""
    loaded: list[str] = []
    for soname in libraries:
        path = find(soname, search)
        target = str(path) if path is not None else soname if system else None
        if target is None:
            raise CudaLibraryMissing(f"CTranslate2 on a GPU needs {soname} (CUDA 12 cuBLAS), which is not "
                                     f"installed: {EXTRA_HINT}")
        try:
            ctypes.CDLL(target, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            if path is None:
                raise CudaLibraryMissing(
                    f"CTranslate2 on a GPU needs {soname} (CUDA 12 cuBLAS): no {WHEEL} wheel on sys.path and "
                    f"not on the system library path: {EXTRA_HINT}") from None
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CudaLibraryMissing(f"CTranslate2 on a GPU needs {soname}; loading {path} failed ({first}): "
                                     f"reinstall {WHEEL}: {EXTRA_HINT}") from None
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
