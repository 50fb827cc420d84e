"""License registry: spellings normalise to SPDX ids, unknown stays unknown, release rules hold."""

from __future__ import annotations

import pytest
import yaml

from granary_pipe import licenses


@pytest.mark.parametrize(
    ("raw", "spdx"),
    [
        ("CC-BY-4.0", "CC-BY-4.0"),
        ("CC BY 4.0", "CC-BY-4.0"),
        ("cc_by_4.0", "CC-BY-4.0"),
        ("  Creative Commons Attribution 4.0 International  ", "CC-BY-4.0"),
        ("CC0", "CC0-1.0"),
        ("cc0 1.0", "CC0-1.0"),
        ("CC BY-SA 4.0", "CC-BY-SA-4.0"),
        ("CC BY-SA 3.0", "CC-BY-SA-3.0"),
        ("cc by-nc 4.0", "CC-BY-NC-4.0"),
        ("CC BY-NC-ND 4.0", "CC-BY-NC-ND-4.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("Public Domain", "public-domain"),
    ],
)
def test_normalize_spellings(raw, spdx):
    assert licenses.normalize(raw) == spdx


@pytest.mark.parametrize("raw", [None, "", "   ", "some weird license", "CC BY 5.0",
                                 "All rights reserved", "CC-BY-4.0-ish"])
def test_unknown_strings_are_unknown(raw):
    assert licenses.normalize(raw) == licenses.UNKNOWN == "unknown"


@pytest.mark.parametrize("spdx", ["CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0",
                                  "public-domain", "MIT", "Apache-2.0"])
def test_release_allowed(spdx):
    assert licenses.allows_release(spdx) is True


@pytest.mark.parametrize("spdx", ["CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "CC-BY-NC-ND-4.0",
                                  "unknown", "", "not-an-id"])
def test_release_refused(spdx):
    assert licenses.allows_release(spdx) is False


def test_allows_release_wants_an_id_not_a_spelling():
    assert licenses.allows_release("CC BY 4.0") is False
    assert licenses.allows_release(licenses.normalize("CC BY 4.0")) is True


@pytest.mark.parametrize("raw", [["x"], {"a": 1}, None, 3])
def test_reason_of_a_non_string_is_unknown(raw):
    # a hostile listing's license may be a list or a mapping: unhashable, it must not reach the cache
    assert licenses.reason(raw) == licenses.UNKNOWN


def test_entries_carry_their_terms():
    by = licenses.get("CC-BY-SA-4.0")
    assert by.attribution and by.share_alike and not by.non_commercial and not by.no_derivatives
    nc = licenses.get("CC-BY-NC-4.0")
    assert nc.non_commercial and not nc.compliant
    assert licenses.get("CC0-1.0").attribution is False
    assert licenses.get("unknown") is None


def test_registry_is_consistent():
    data = yaml.safe_load(licenses.registry_path().read_text(encoding="utf-8"))["licenses"]
    seen: dict[str, str] = {}
    for spdx, entry in data.items():
        # NC and ND licenses can never be open-source compliant
        if entry["non_commercial"] or entry["no_derivatives"]:
            assert not entry["compliant"], spdx
        for spelling in [spdx, *entry.get("aliases", [])]:
            key = licenses._key(spelling)
            assert seen.setdefault(key, spdx) == spdx, f"{spelling!r} maps to both {seen[key]} and {spdx}"
            assert licenses.normalize(spelling) == spdx
