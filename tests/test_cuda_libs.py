"""The GPU ASR path: CTranslate2's CUDA 12 cuBLAS is found in the [gpu] extra's wheel or the error says so.

This machine has no GPU and no CUDA 12 cuBLAS, so the error paths run for real; the found path
is checked with a real shared library placed where the wheel puts cuBLAS.
"""

from __future__ import annotations

import ctypes.util
import shutil
import tomllib
from pathlib import Path

import pytest

from granary_pipe.stages.asr import cuda_libs, whisper_runtime

ROOT = Path(__file__).resolve().parents[1]


def _wheel_layout(root: Path, files: dict[str, bytes | Path]) -> Path:
    lib = root / "nvidia" / "cublas" / "lib"
    lib.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, lib / name)
        else:
            (lib / name).write_bytes(content)
    return lib


def test_missing_everywhere_names_library_and_extra(tmp_path):
    with pytest.raises(cuda_libs.CudaLibraryMissing) as err:
        cuda_libs.preload(search=[str(tmp_path)], system=False)
    line = str(err.value)
    assert "\n" not in line
    assert "libcublasLt.so.12" in line and "pip install 'granary_pipe[gpu]'" in line


def test_not_on_system_path_says_so(tmp_path):
    if ctypes.util.find_library("cublasLt"):
        pytest.fail("this test expects a machine without CUDA cuBLAS (the project's CPU machines)")
    with pytest.raises(cuda_libs.CudaLibraryMissing, match=r"no nvidia-cublas-cu12 wheel on sys.path and not on "
                                                           r"the system library path: pip install"):
        cuda_libs.preload(search=[str(tmp_path)], system=True)


def test_broken_wheel_copy_names_the_file(tmp_path):
    lib = _wheel_layout(tmp_path, {"libcublasLt.so.12": b"not an ELF file", "libcublas.so.12": b"x"})
    with pytest.raises(cuda_libs.CudaLibraryMissing) as err:
        cuda_libs.preload(search=[str(tmp_path)], system=False)
    line = str(err.value)
    assert str(lib / "libcublasLt.so.12") in line and "reinstall nvidia-cublas-cu12" in line
    assert "\n" not in line


def test_wheel_copy_found_and_loaded_first(tmp_path):
    """A loadable library in the wheel layout is loaded (RTLD_GLOBAL) and reported by path."""
    real = Path(ctypes.util.find_library("m") or "")
    candidates = [p for p in (Path("/lib/x86_64-linux-gnu/libm.so.6"), Path("/usr/lib/x86_64-linux-gnu/libm.so.6"),
                              Path("/lib64/libm.so.6")) if p.is_file()]
    assert candidates, f"no libm found to stand in for cuBLAS ({real})"
    _wheel_layout(tmp_path, {"libcublasLt.so.12": candidates[0], "libcublas.so.12": candidates[0]})
    loaded = cuda_libs.preload(search=["", str(tmp_path / "missing"), str(tmp_path)], system=False)
    assert loaded == [str(tmp_path / "nvidia/cublas/lib/libcublasLt.so.12"),
                      str(tmp_path / "nvidia/cublas/lib/libcublas.so.12")]


def test_model_load_on_cuda_fails_with_the_line(monkeypatch, tmp_path):
    """The product's load path: device cuda on a machine without cuBLAS 12 stops before CTranslate2."""
    monkeypatch.setattr(cuda_libs.sys, "path", [str(tmp_path)])
    whisper_runtime.load.cache_clear()
    with pytest.raises(cuda_libs.CudaLibraryMissing, match=r"needs libcublasLt\.so\.12 .*granary_pipe\[gpu\]"):
        whisper_runtime.load("whisper-tiny.en", "cuda", "int8")


def test_cpu_and_auto_without_gpu_do_not_need_cuda():
    assert not cuda_libs.wants_cuda("cpu")
    assert cuda_libs.wants_cuda("cuda") and cuda_libs.wants_cuda("cuda:1")
    assert not cuda_libs.wants_cuda("auto")  # no CUDA device on the project's machines


def test_gpu_extra_brings_cublas12():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("nvidia-cublas-cu12") for req in extras["gpu"])
    pins = (ROOT / "docker" / "constraints.txt").read_text()
    assert "\nnvidia-cublas-cu12==12." in pins
