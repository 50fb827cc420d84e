"""License registry: SPDX ids, the spellings found in the wild, and what each allows.

A license string that matches no id, alias or URL is ``"unknown"``: rejected, never guessed.

- :func:`normalize` maps a spelling (``"CC BY 4.0"``, ``"cc-by-4.0"``, ``"Creative Commons
  Attribution 4.0 International"``, ``"https://creativecommons.org/licenses/by/4.0/"``, ...) to
  its registry id. It is strict on purpose: text is NFKC-normalised (so full-width forms and
  non-breaking spaces read as their ASCII selves), then anything that is not plain printable
  ASCII (homoglyphs, zero-width characters, control characters), longer than
  :data:`MAX_LICENSE_CHARS`, or not an exact alias/URL of one entry is unknown.
  ``"X (Y)"`` is accepted only when both X and Y name the same entry.
- :func:`compatible` says whether rows under one license may go into a release under another.
- :func:`allows_release` says whether rows under a license may go into any open release.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

UNKNOWN = "unknown"
MAX_LICENSE_CHARS = 200
"""Longer strings are never license names (and are not worth running patterns over)."""

PUBLIC_DOMAIN_IDS = frozenset({"CC0-1.0", "PDDL-1.0", "public-domain"})
"""Entries whose rows may go into a release under any compliant license."""

_CC_RE = re.compile(r"^CC-(BY|BY-SA)-(\d)\.(\d)$")


@dataclass(frozen=True)
class License:
    """One registry entry."""

    spdx: str
    compliant: bool
    attribution: bool
    share_alike: bool
    non_commercial: bool
    no_derivatives: bool
    notes: str = ""

    def flags(self) -> str:
        """Short flag string for tables: ``BY SA NC ND`` with ``-`` where a term does not apply."""
        return " ".join(f if on else "-" for f, on in (("BY", self.attribution), ("SA", self.share_alike),
                                                      ("NC", self.non_commercial), ("ND", self.no_derivatives)))


def registry_path() -> Path:
    """The registry file, ``licenses/registry.yaml`` (linked into the package as ``_data/``)."""
    return Path(__file__).parent / "_data" / "licenses.yaml"


def _key(text: str) -> str:
    return re.sub(r"[\s\-_.]+", "", text).lower()


def url_key(url: str) -> str:
    """Canonical form of a license URL: no scheme, ``www.``, query, fragment, ``deed.xx``,
    ``legalcode[.xx]``, ``.html``/``.txt`` or trailing slash; lower case."""
    u = url.strip().lower()
    u = re.sub(r"^[a-z][a-z0-9+.\-]*://", "", u)
    u = re.sub(r"^www\.", "", u)
    u = re.split(r"[?#]", u, maxsplit=1)[0]
    u = u.rstrip("/")
    u = re.sub(r"/(deed|legalcode)(\.[a-z_\-]+)?$", "", u)
    u = re.sub(r"\.(html?|txt|md)$", "", u)
    return u.rstrip("/")


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, License], dict[str, str], dict[str, str]]:
    data = yaml.safe_load(registry_path().read_text(encoding="utf-8"))["licenses"]
    entries, aliases, urls = {}, {}, {}
    for spdx, d in data.items():
        entries[spdx] = License(spdx, bool(d["compliant"]), bool(d["attribution"]), bool(d["share_alike"]),
                                bool(d["non_commercial"]), bool(d["no_derivatives"]), str(d.get("notes") or "").strip())
        for name in [spdx, *d.get("aliases", [])]:
            aliases[_key(name)] = spdx
        for url in d.get("urls", []):
            urls[url_key(url)] = spdx
    return entries, aliases, urls


def ids() -> list[str]:
    """Every registry id, in registry order."""
    return list(_load()[0])


def _looks_like_url(text: str) -> bool:
    return bool(re.match(r"^(?:[a-z][a-z0-9+.\-]*://)?(?:www\.)?[a-z0-9\-]+(?:\.[a-z0-9\-]+)+/\S*$", text, re.I))


def _match(text: str, depth: int = 0) -> str | None:
    entries, aliases, urls = _load()
    text = text.strip()
    if not text:
        return None
    if _looks_like_url(text):
        return urls.get(url_key(text))
    hit = aliases.get(_key(text))
    if hit:
        return hit
    if depth == 0:
        # "Creative Commons Attribution 4.0 International (CC BY 4.0)": both parts must agree
        m = re.fullmatch(r"([^()]+?)\s*\(([^()]+)\)\s*([^()]*)", text)
        if m:
            outer = f"{m[1]} {m[3]}".strip()
            a, b = _match(outer, 1), _match(m[2], 1)
            return a if a is not None and a == b else None
        # "License: CC-BY-4.0", "SPDX-License-Identifier: CC0-1.0", "the MIT license"
        m = re.fullmatch(r"(?i)(?:spdx-license-identifier|licen[cs]e)\s*:\s*(.+)", text)
        if m:
            return _match(m[1], 1)
        stripped = re.sub(r"(?i)^the\s+", "", text)
        stripped = re.sub(r"(?i)\s+licen[cs]e$", "", stripped)
        if stripped != text:
            return _match(stripped, 1)
    return None


def normalize(raw: str | None) -> str:
    """Registry id for a license string as written in a manifest, a card or a URL; else ``"unknown"``."""
    if raw is None or len(str(raw)) > 4 * MAX_LICENSE_CHARS:
        return UNKNOWN
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    if not text or len(text) > MAX_LICENSE_CHARS or not text.isascii() or not text.isprintable():
        return UNKNOWN
    return _match(text) or UNKNOWN


def get(spdx: str) -> License | None:
    """Registry entry of an id (None for unknown). Takes ids, not spellings: see :func:`normalize`."""
    return _load()[0].get(spdx)


def allows_release(spdx: str) -> bool:
    """True when rows under ``spdx`` may go into an open-source-compliant release."""
    entry = get(spdx)
    return bool(entry and entry.compliant)


def _cc_family(spdx: str) -> tuple[str, tuple[int, int]] | None:
    m = _CC_RE.match(spdx)
    return (m[1], (int(m[2]), int(m[3]))) if m else None


def compatible(row_license: str, release_license: str) -> bool:
    """May rows under ``row_license`` go into a release under ``release_license`` (both registry ids)?

    - both must be registry ids of compliant licenses (an open release; NC/ND/unknown: never);
    - the same license: yes;
    - CC0 / PDDL / public domain rows: into any compliant release;
    - CC-BY-x rows: into CC-BY-y or CC-BY-SA-y with y >= x;
    - CC-BY-SA-x rows: into CC-BY-SA-y with y >= x only;
    - anything else (ODC-By, CDLA, MIT, Apache, ... into another license): no. These are not
      assumed convertible; a person can add a rule here with the reason.
    """
    row, rel = get(row_license), get(release_license)
    if row is None or rel is None or not row.compliant or not rel.compliant:
        return False
    if row.spdx == rel.spdx or row.spdx in PUBLIC_DOMAIN_IDS:
        return True
    row_cc, rel_cc = _cc_family(row.spdx), _cc_family(rel.spdx)
    if row_cc is None or rel_cc is None:
        return False
    (row_fam, row_ver), (rel_fam, rel_ver) = row_cc, rel_cc
    if row_fam == "BY":
        return rel_fam in ("BY", "BY-SA") and rel_ver >= row_ver
    return rel_fam == "BY-SA" and rel_ver >= row_ver


def why_not(spdx: str) -> str | None:
    """Why rows (or a model's outputs) under ``spdx`` cannot go into an open release; None if they can."""
    entry = get(spdx)
    if entry is None:
        return "unknown license (not in licenses/registry.yaml)"
    if entry.compliant:
        return None
    terms = [t for t, on in (("non-commercial", entry.non_commercial), ("no-derivatives", entry.no_derivatives)) if on]
    return ", ".join(terms) if terms else "not open-source compliant (use restrictions)"


def declared(raw: str) -> str:
    """Registry id of a license a pipeline declares for a model (``model_license: Apache-2.0``).

    Spellings :func:`normalize` knows are accepted; anything else is a ``ValueError`` that says
    what to write. Validates only: whether the license allows a release is decided at release
    time (a declared non-commercial model may still be run, its labels just cannot go out)."""
    spdx = normalize(raw)
    if spdx == UNKNOWN:
        raise ValueError(f"model license {raw!r} is not in licenses/registry.yaml: write one of its "
                         "SPDX ids (e.g. Apache-2.0, MIT, CC-BY-4.0)")
    return spdx
