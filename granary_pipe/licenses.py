"""License registry: SPDX ids, the spellings found in the wild, and what each allows.

A license string that matches no id or alias is ``"unknown"``: rejected, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

UNKNOWN = "unknown"


@dataclass(frozen=True)
class License:
    """One registry entry."""

    spdx: str
    compliant: bool
    attribution: bool
    share_alike: bool
    non_commercial: bool
    no_derivatives: bool


def registry_path() -> Path:
    """The registry file, ``licenses/registry.yaml`` (linked into the package as ``_data/``)."""
    return Path(__file__).parent / "_data" / "licenses.yaml"


def _key(text: str) -> str:
    return re.sub(r"[\s\-_.]+", "", text).lower()


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, License], dict[str, str]]:
    data = yaml.safe_load(registry_path().read_text(encoding="utf-8"))["licenses"]
    entries, aliases = {}, {}
    for spdx, d in data.items():
        entries[spdx] = License(spdx, bool(d["compliant"]), bool(d["attribution"]), bool(d["share_alike"]),
                                bool(d["non_commercial"]), bool(d["no_derivatives"]))
        for name in [spdx, *d.get("aliases", [])]:
            aliases[_key(name)] = spdx
    return entries, aliases


def normalize(raw: str | None) -> str:
    """SPDX id for a license string as written in a manifest, or ``"unknown"``."""
    if raw is None or not str(raw).strip():
        return UNKNOWN
    return _load()[1].get(_key(str(raw)), UNKNOWN)


def get(spdx: str) -> License | None:
    """Registry entry of an SPDX id (None for unknown)."""
    return _load()[0].get(spdx)


def allows_release(spdx: str) -> bool:
    """True when rows under ``spdx`` may go into an open-source-compliant release."""
    entry = get(spdx)
    return bool(entry and entry.compliant)
