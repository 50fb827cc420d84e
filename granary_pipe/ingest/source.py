"""The source-manifest schema: a local corpus to run, or a catalog entry describing a remote one
(loads, but cannot run). Design: docs/sources.md, "Catalog" and "Readers"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from granary_pipe.config import ConfigError, _errors, read_yaml

ReaderName = Literal["folder", "jsonl", "tsv", "parquet", "webdataset", "librilight", "librispeech", "mls"]
READERS: tuple[str, ...] = get_args(ReaderName)
"""Reader names a manifest's ``reader:`` may take."""

CATALOG_FACTS = ("license", "hours", "languages", "labelled", "homepage", "citation", "layout")
"""Facts every catalog entry records, and says in ``confirmed:`` whether each was confirmed."""

CATALOG_ONLY = "catalog entry: set audio/listing/url to a local copy"
"""Start of the error for running a manifest that only describes a remote corpus."""

_LOCATIONS = "give exactly one of 'audio' (a glob), 'listing' (a JSONL or TSV file) or 'url' (read by 'reader')"
_LANG = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LicenseEvidence(_Strict):
    """Where the license was read, and what the page says (a short quote)."""

    url: str = Field(min_length=8)
    quote: str = Field(min_length=3)


class SourceRef(_Strict):
    """One page read, and which facts it supports."""

    url: str = Field(min_length=8)
    facts: list[str] = Field(min_length=1)
    note: str | None = None


class Hours(_Strict):
    """Published hours: per language where the corpus publishes them, else a total."""

    total: float | None = Field(None, ge=0)
    by_lang: dict[str, float] = Field(default_factory=dict)
    note: str | None = None

    @model_validator(mode="after")
    def _some(self) -> "Hours":
        if self.total is None and not self.by_lang:
            raise ValueError("give 'total' or 'by_lang'")
        if any(v < 0 for v in self.by_lang.values()):
            raise ValueError("hours must be >= 0")
        return self

    def resolved_total(self) -> float:
        """``total`` if given, else the sum over languages."""
        return float(self.total) if self.total is not None else float(sum(self.by_lang.values()))


class SurveyRef(_Strict):
    """What a survey (MOSEL, Granary) published about this corpus, as it wrote it."""

    name: str
    url: str
    hours: float | None = None
    license: str | None = None
    languages: list[str] = Field(default_factory=list)
    labelled: bool | None = None
    note: str | None = None


class CatalogInfo(_Strict):
    """Facts about a corpus, each traceable to a page (``sources``) and marked confirmed or not."""

    languages: list[str] = Field(min_length=1)
    hours: Hours
    labelled: bool
    license_evidence: LicenseEvidence
    layout: str = Field(min_length=3)
    version: str | None = None
    bibtex_key: str | None = None
    derived_from: list[str] = Field(default_factory=list)
    overlaps: list[str] = Field(default_factory=list)
    surveys: list[SurveyRef] = Field(default_factory=list)
    sources: list[SourceRef] = Field(min_length=1)
    confirmed: dict[str, bool]
    notes: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "CatalogInfo":
        bad = [lang for lang in [*self.languages, *self.hours.by_lang] if not re.match(_LANG, lang)]
        if bad:
            raise ValueError(f"not ISO 639 language codes: {bad}")
        missing = [f for f in CATALOG_FACTS if f not in self.confirmed]
        if missing:
            raise ValueError(f"'confirmed' must say true/false for {list(CATALOG_FACTS)}; missing {missing}")
        extra = sorted(set(self.hours.by_lang) - set(self.languages))
        if extra:
            raise ValueError(f"hours.by_lang has languages not in 'languages': {extra}")
        return self

    def unconfirmed(self) -> list[str]:
        """Facts marked not confirmed."""
        return [f for f, ok in self.confirmed.items() if not ok]


class SourceManifest(_Strict):
    """The fields of a source manifest file (``name``: ``[A-Za-z0-9_-]``, the recording ids' prefix)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    license: str  # the default license (registry id or SPDX expression); a listing line may override it
    license_map: dict[str, str] = Field(default_factory=dict)
    """What the source means by license strings the registry does not guess (``{CC-BY: CC-BY-3.0}``),
    keys matched like registry aliases, values one versioned id (docs/sources.md, "Licenses")."""
    homepage: str | None = None
    citation: str | None = None
    description: str | None = None
    audio: str | None = None
    listing: str | None = None
    url: str | None = None
    reader: ReaderName | None = None
    reader_options: dict[str, Any] = Field(default_factory=dict)
    allow_outside_root: bool = False
    """Let listed paths resolve outside the corpus root (else a ``ConfigError`` naming the line)."""
    catalog: CatalogInfo | None = None

    @field_validator("license_map")
    @classmethod
    def _license_map(cls, value: dict[str, str]) -> dict[str, str]:
        from granary_pipe import license_expr, licenses

        out = {}
        for key, to in value.items():
            if not str(key).strip():
                raise ValueError("license_map: a key is empty")
            spdx = licenses.normalize(to)
            if spdx in licenses.VERDICTS or not license_expr.is_id(spdx):
                raise ValueError(f"license_map[{key!r}]: {to!r} is not one versioned license id of the registry "
                                 f"or the SPDX list ({licenses.parse(to).detail or spdx}); write e.g. CC-BY-3.0")
            out[str(key)] = spdx
        return out

    @model_validator(mode="after")
    def _one_location(self) -> "SourceManifest":
        given = [k for k in ("audio", "listing", "url") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{_LOCATIONS}; got {given}")
        if not given and self.catalog is None:
            raise ValueError(f"{_LOCATIONS} (a manifest without one must carry a 'catalog' block)")
        if self.audio is not None and self.reader not in (None, "folder"):
            raise ValueError(f"'audio' is a glob read by reader 'folder', not {self.reader!r}; "
                             "use 'url' for other layouts")
        if self.listing is not None and self.reader not in (None, "jsonl", "tsv"):
            raise ValueError(f"'listing' is read by reader 'jsonl' or 'tsv', not {self.reader!r}; "
                             "use 'url' for other layouts")
        if self.url is not None and self.reader is None:
            raise ValueError(f"'url' needs 'reader' (one of {', '.join(READERS)})")
        return self

    @property
    def runnable(self) -> bool:
        """True when the manifest points at audio (a catalog-only entry does not)."""
        return any(getattr(self, k) is not None for k in ("audio", "listing", "url"))

    @property
    def effective_reader(self) -> str | None:
        """The reader that lists this manifest's audio."""
        if self.reader is not None:
            return self.reader
        return "folder" if self.audio is not None else "jsonl" if self.listing is not None else None


def load_manifest(path: Path) -> SourceManifest:
    """Read and validate a source manifest (errors name file, line and key)."""
    data, node = read_yaml(Path(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with name, license and audio, listing or url")
    try:
        return SourceManifest.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_errors(Path(path), node, err)) from None


def require_runnable(manifest: SourceManifest, path: Path) -> None:
    """ConfigError naming the file when ``manifest`` is a catalog-only entry."""
    if not manifest.runnable:
        hint = f" read by reader {manifest.reader!r}" if manifest.reader else ""
        raise ConfigError(f"{path}: {CATALOG_ONLY} ({_LOCATIONS}; e.g. url: /data/{manifest.name}{hint})")
