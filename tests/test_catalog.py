"""The source catalog: every entry loads, carries the required facts and a registry license;
the catalog covers the MOSEL survey's list and Granary's sources; totals and attribution."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
import yaml

from granary_pipe import catalog, licenses
from granary_pipe.config import ConfigError
from granary_pipe.ingest.source import CATALOG_FACTS, READERS

CATALOG = Path(__file__).resolve().parents[1] / "manifests" / "catalog"
ENTRIES = catalog.load_catalog(CATALOG)
BY_NAME = {e.name: e for e in ENTRIES}

MOSEL_ROWS = {  # the survey's list (github.com/hlt-mt/mosel README) -> catalog entry, published hours
    "CommonVoice": ("common-voice", 6732), "CoVoST2": ("covost2", 687), "CSS10": ("css10", 99),
    "EMU": ("emu-polish", 56), "EU Parliament": ("eu-parliament-polish", 32), "FLEURS": ("fleurs", 215),
    "Large Corpus of Czech Parliament Plenary Hearings": ("czech-parliament-plenary", 444),
    "LibriLight": ("librilight", 57706), "LibriTTS": ("libritts", 585), "LibriSpeech": ("librispeech", 360),
    "LibriVoxDeEn": ("librivoxdeen", 547), "MC Speech": ("mc-speech", 22),
    "Multilingual LibriSpeech": ("multilingual-librispeech", 50687), "SIWIS": ("siwis", 11),
    "Speech Commands": ("speech-commands", 18), "VCTK": ("vctk", 44),
    "VoxPopuli (unlabelled)": ("voxpopuli-unlabelled", 383500), "VoxPopuli (labelled)": ("voxpopuli-labelled", 1791),
    "YouTube-Commons": ("youtube-commons", 3261 + 443396), "MOSEL": ("mosel", 441206),
}
GRANARY_SOURCES = ["yodas2", "youtube-commons", "voxpopuli-unlabelled", "librilight", "mosel"]


def test_catalog_has_every_corpus_of_the_survey_and_granary():
    names = set(BY_NAME)
    assert {name for name, _ in MOSEL_ROWS.values()} <= names
    assert set(GRANARY_SOURCES) <= names
    for required in ["voxpopuli-unlabelled", "voxpopuli-labelled", "yodas2", "youtube-commons", "librilight",
                     "multilingual-librispeech", "common-voice", "fleurs", "librispeech", "covost2"]:
        assert required in names


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_entry_has_required_facts(entry):
    m, info = entry.manifest, entry.info
    assert entry.path.stem == m.name
    assert licenses.get(m.license) is not None, f"{m.license!r} is not a registry id"
    assert licenses.normalize(m.license) == m.license
    assert m.homepage and m.homepage.startswith("http")
    assert m.citation and ":" in m.citation  # "bibtex-key: Title (venue)"
    assert m.reader in READERS
    assert not m.runnable  # catalog entries describe remote corpora
    assert info.languages and all(re.match(r"^[a-z]{2,3}$", lang) for lang in info.languages)
    assert info.hours.resolved_total() > 0
    assert isinstance(info.labelled, bool)
    assert info.license_evidence.url.startswith("http") and info.license_evidence.quote
    assert set(CATALOG_FACTS) <= set(info.confirmed) and all(isinstance(v, bool) for v in info.confirmed.values())
    assert info.sources and all(s.url.startswith("http") for s in info.sources)
    source_urls = {s.url.split("#")[0] for s in info.sources}
    assert info.license_evidence.url.split("#")[0] in source_urls, "the license evidence must be a listed source"
    cited = {f for s in info.sources for f in s.facts}
    for fact, ok in info.confirmed.items():
        if ok and fact != "homepage":
            assert fact in cited, f"{fact} is marked confirmed but no source supports it"
    by_lang = info.hours.by_lang
    if by_lang and info.hours.total is not None:
        assert math.fsum(by_lang.values()) <= info.hours.total * 1.01


def test_every_catalog_license_allows_an_open_release():
    assert all(e.compliant for e in ENTRIES)


def test_catalog_reproduces_the_survey_totals():
    published: dict[str, float] = {}  # hours the survey gives per entry
    for e in ENTRIES:
        for s in e.info.surveys:
            if s.name == "mosel" and s.hours is not None:
                published[e.name] = published.get(e.name, 0.0) + s.hours
    for row, (name, hours) in MOSEL_ROWS.items():
        assert published[name] == hours, row
    # the survey's headline: 950k hours of open-source compliant speech (its own pseudo-labels apart)
    assert round(sum(h for n, h in published.items() if n != "mosel")) == 950193


def test_sources_table_lists_every_corpus():
    text = catalog.format_sources(catalog.sources_rows(ENTRIES))
    for e in ENTRIES:
        assert e.name in text
    assert "compliant" in text.splitlines()[0] and "CC0-1.0" in text


def test_attribution_info_comes_from_the_catalog(tmp_path):
    got = catalog.attribution_info({"name": "librispeech", "license": "CC-BY-4.0", "homepage": None}, CATALOG)
    assert got["homepage"] == BY_NAME["librispeech"].manifest.homepage
    assert got["citation"] == BY_NAME["librispeech"].manifest.citation
    assert got["license_evidence"]["url"].startswith("https://")
    assert "homepage" in got["unconfirmed"]
    plain = {"name": "not-in-catalog", "homepage": "https://x"}
    assert catalog.attribution_info(plain, CATALOG) == plain
    assert catalog.attribution_info({"name": "librispeech"}, tmp_path / "no-catalog") == {"name": "librispeech"}


def _copy_entry(src: str, dst: Path, **changes) -> Path:
    doc = yaml.safe_load((CATALOG / f"{src}.yaml").read_text())
    for key, value in changes.items():
        target = doc
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        if value is None:
            target.pop(last)
        else:
            target[last] = value
    path = dst / f"{doc['name']}.yaml"
    dst.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def test_catalog_checks(tmp_path):
    d = tmp_path / "cat"
    _copy_entry("librispeech", d)
    assert [e.name for e in catalog.load_catalog(d)] == ["librispeech"]
    bad = _copy_entry("librispeech", tmp_path / "c2", **{"catalog.confirmed.hours": None})
    with pytest.raises(ConfigError, match=r"confirmed.*missing \['hours'\]"):
        catalog.load_entry(bad)
    bad = _copy_entry("covost2", tmp_path / "c3")  # derived_from common-voice, absent here
    with pytest.raises(ConfigError, match="'common-voice', which is not a catalog entry"):
        catalog.load_catalog(tmp_path / "c3")
    bad = _copy_entry("librispeech", tmp_path / "c4", **{"catalog.hours.by_lang": {"english": 1.0}})
    with pytest.raises(ConfigError, match="not ISO 639"):
        catalog.load_entry(bad)
    shutil.copy(d / "librispeech.yaml", d / "copy.yaml")
    with pytest.raises(ConfigError, match="also used by"):
        catalog.load_catalog(d)
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: x\nlicense: CC0-1.0\naudio: '*.wav'\n")
    with pytest.raises(ConfigError, match="not a catalog entry"):
        catalog.load_entry(plain)


def test_unknown_top_level_key_is_still_an_error(tmp_path):
    path = _copy_entry("librispeech", tmp_path, hours=3)  # hours belongs under catalog:
    with pytest.raises(ConfigError, match=r"hours: unknown key"):
        catalog.load_entry(path)
