"""License registry: SPDX ids, the spellings found in the wild, and what each allows.

A row's license is a registry id, a canonical SPDX expression over ids, or a verdict (:data:`VERDICTS`).
Design: docs/sources.md, "Licenses"."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from granary_pipe import license_expr

UNKNOWN = "unknown"
UNPARSEABLE = "unparseable"
VERSION_UNSPECIFIED = "version_unspecified"
VERDICTS = frozenset({UNKNOWN, UNPARSEABLE, VERSION_UNSPECIFIED})
"""Values of a row's ``license`` that are verdicts, not licenses."""
MAX_LICENSE_CHARS = 200
PUBLIC_DOMAIN_IDS = frozenset({"CC0-1.0", "PDDL-1.0", "public-domain"})

_CC_RE = re.compile(r"^CC-(BY|BY-SA)-(\d\.\d)$")
_PREFIX_RE = re.compile(r"(?i)^(?:spdx-license-identifier|licen[cs]e)\s*:\s*(.+)$")


@dataclass(frozen=True)
class License:
    spdx: str
    compliant: bool
    attribution: bool
    share_alike: bool
    non_commercial: bool
    no_derivatives: bool
    notes: str = ""

    def flags(self) -> str:
        """``BY SA NC ND`` with ``-`` where a term does not apply."""
        return " ".join(f if on else "-" for f, on in (("BY", self.attribution), ("SA", self.share_alike),
                                                      ("NC", self.non_commercial), ("ND", self.no_derivatives)))


def registry_path() -> Path:
    """``licenses/registry.yaml``, linked into the package as ``_data/licenses.yaml``."""
    return Path(__file__).parent / "_data" / "licenses.yaml"


def _key(text: str) -> str:
    return re.sub(r"[\s\-_.]+", "", text).lower()


def url_key(url: str) -> str:
    """A license URL without scheme, ``www.``, query, ``deed``/``legalcode`` suffix or extension; lower case."""
    u = url.strip().lower()
    u = re.sub(r"^[a-z][a-z0-9+.\-]*://", "", u)
    u = re.sub(r"^www\.", "", u)
    u = re.split(r"[?#]", u, maxsplit=1)[0]
    u = u.rstrip("/")
    u = re.sub(r"/(deed|legalcode)(\.[a-z_\-]+)?$", "", u)
    u = re.sub(r"\.(html?|txt|md)$", "", u)
    return u.rstrip("/")


@lru_cache(maxsize=1)
def _registry() -> dict:
    return yaml.safe_load(registry_path().read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, License], dict[str, str], dict[str, str]]:
    entries, aliases, urls = {}, {}, {}
    for spdx, d in _registry()["licenses"].items():
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
    _, aliases, urls = _load()
    text = text.strip()
    if not text:
        return None
    if _looks_like_url(text):
        return urls.get(url_key(text))
    if hit := aliases.get(_key(text)):
        return hit
    if depth == 0:
        # "Creative Commons Attribution 4.0 International (CC BY 4.0)": both parts must agree
        m = re.fullmatch(r"([^()]+?)\s*\(([^()]+)\)\s*([^()]*)", text)
        if m:
            outer = f"{m[1]} {m[3]}".strip()
            a, b = _match(outer, 1), _match(m[2], 1)
            return a if a is not None and a == b else None
        # "License: CC-BY-4.0", "SPDX-License-Identifier: CC0-1.0", "the MIT license"
        m = _PREFIX_RE.match(text)
        if m:
            return _match(m[1], 1)
        stripped = re.sub(r"(?i)^the\s+", "", text)
        stripped = re.sub(r"(?i)\s+licen[cs]e$", "", stripped)
        if stripped != text:
            return _match(stripped, 1)
    return None


_UNVERSIONED_CC_RE = re.compile(
    r"^(?:cc|creativecommons)(?:by|attribution)"
    r"(?:sa|sharealike|nc|noncommercial|nd|noderivs|noderivatives)*(?:licen[cs]e)?$")


@dataclass(frozen=True)
class Policy:
    """A registry policy for a family of SPDX ids that have no entry of their own."""

    name: str
    ids: re.Pattern
    why: str


@lru_cache(maxsize=1)
def policies() -> tuple[Policy, ...]:
    """The registry's ``policies:`` (e.g. ``copyleft_software``), in registry order."""
    data = _registry().get("policies") or {}
    return tuple(Policy(name, re.compile(d["ids"]), " ".join(str(d["why"]).split())) for name, d in data.items())


def policy_of(spdx: str) -> Policy | None:
    """The policy covering an SPDX id that has no registry entry."""
    if get(spdx) is not None:
        return None
    return next((p for p in policies() if p.ids.search(spdx)), None)


def unversioned_cc(text: str) -> bool:
    """True for a Creative Commons license named without a version (``CC-BY``, ``CC BY-SA``)."""
    return bool(_UNVERSIONED_CC_RE.match(_key(text)))


@dataclass(frozen=True)
class Parsed:
    raw: str | None
    license: str
    """The row's ``license``: a registry id, a canonical SPDX expression, or a verdict (:data:`VERDICTS`)."""
    detail: str = ""
    """Why a verdict (the syntax error, the ids not known), empty otherwise."""
    mapped: tuple[tuple[str, str], ...] = ()
    """``(as the source wrote it, registry id)`` for each ``license_map`` entry that applied."""


def _map_items(license_map: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (license_map or {}).items()))


def parse(raw: object, license_map: dict[str, str] | None = None) -> Parsed:
    """Read a license string as written in a manifest, a listing, a card or a URL; ``license_map``
    (``{"CC-BY": "CC-BY-3.0"}``) applies to the whole string and to each id of an expression."""
    if raw is None:
        return Parsed(None, UNKNOWN, "no license given")
    if not isinstance(raw, str):
        return Parsed(str(raw)[:100], UNKNOWN, f"not a string ({type(raw).__name__})")
    if len(raw) > 4 * MAX_LICENSE_CHARS:
        return Parsed(raw, UNKNOWN, f"longer than {MAX_LICENSE_CHARS} characters")
    return _parse(raw, _map_items(license_map))


@lru_cache(maxsize=8192)
def _parse(raw: str, map_items: tuple[tuple[str, str], ...]) -> Parsed:
    text = unicodedata.normalize("NFKC", raw).strip()
    if not text:
        return Parsed(raw, UNKNOWN, "empty")
    if len(text) > MAX_LICENSE_CHARS:
        return Parsed(raw, UNKNOWN, f"longer than {MAX_LICENSE_CHARS} characters")
    if not text.isascii() or not text.isprintable():
        return Parsed(raw, UNKNOWN, "non-ASCII or control characters")
    lmap = {_key(k): v for k, v in map_items}
    if (to := lmap.get(_key(text))) is not None:
        return Parsed(raw, to, mapped=((text, to),))
    if (hit := _match(text)) is not None:
        return Parsed(raw, hit)
    if unversioned_cc(text):
        return Parsed(raw, VERSION_UNSPECIFIED, f"{text!r} names no version (2.0, 3.0 and 4.0 differ)")
    prefixed = _PREFIX_RE.match(text)
    expr = prefixed[1] if prefixed else text
    if not license_expr.looks_like_expression(expr):
        return Parsed(raw, UNKNOWN, "not a registry spelling or an SPDX expression")
    return _expression(raw, expr, lmap)


def _expression(raw: str, text: str, lmap: dict[str, str]) -> Parsed:
    mapped: list[tuple[str, str]] = []

    def subst(token: str) -> str | None:
        to = lmap.get(_key(token))
        if to is not None:
            mapped.append((token, to))
        return to

    text = license_expr.substitute(text, subst) if lmap else text
    try:
        tree = license_expr.parse(text)
    except license_expr.ExpressionSyntaxError as err:
        return Parsed(raw, UNPARSEABLE, str(err), tuple(mapped))
    aliases = _load()[1]
    unknown: list[str] = []
    unversioned: list[str] = []

    def resolve(leaf: license_expr.Leaf) -> license_expr.Leaf:
        key = aliases.get(_key(leaf.key))
        if key is None and license_expr.is_known_spdx(leaf.key):
            key = leaf.key
        if key is None:
            (unversioned if unversioned_cc(leaf.key) else unknown).append(leaf.key)
        if leaf.exception is not None and not license_expr.is_spdx_exception(leaf.exception):
            unknown.append(f"WITH {leaf.exception}")
        return license_expr.Leaf(key or leaf.key, leaf.exception)

    canonical = license_expr.render(license_expr.map_leaves(tree, resolve))
    if unknown:
        return Parsed(raw, UNKNOWN, f"not in the registry or the SPDX list: {', '.join(unknown)}", tuple(mapped))
    if unversioned:
        return Parsed(raw, VERSION_UNSPECIFIED, f"no version: {', '.join(unversioned)} (2.0, 3.0 and 4.0 differ)",
                      tuple(mapped))
    return Parsed(raw, canonical, mapped=tuple(mapped))


def normalize(raw: object, license_map: dict[str, str] | None = None) -> str:
    """The row license of a string: a registry id, an SPDX expression, or one of :data:`VERDICTS`."""
    return parse(raw, license_map).license


def get(spdx: str) -> License | None:
    """Registry entry of an id (None for unknown). Takes ids, not spellings: see :func:`normalize`."""
    return _load()[0].get(spdx)


@lru_cache(maxsize=4096)
def _tree(value: str) -> license_expr.Node | None:
    """The expression tree of a canonical row license (None when ``value`` is not one)."""
    if value in VERDICTS or parse(value).license != value:
        return None
    try:
        return license_expr.parse(value)
    except license_expr.ExpressionSyntaxError:  # a registry id that is no SPDX token: none is
        return None


def _leaf_reason(leaf: license_expr.Leaf) -> str | None:
    entry = get(leaf.key)
    if entry is not None:
        return None if entry.compliant else entry.spdx
    policy = policy_of(leaf.key)
    return policy.name if policy is not None else UNKNOWN


def _reason_of(node: license_expr.Node) -> str | None:
    if isinstance(node, license_expr.Leaf):
        return _leaf_reason(node)
    got = [_reason_of(a) for a in node.args]
    if node.op == "OR":
        return None if None in got else got[0]
    return next((r for r in got if r is not None), None)


def reason(license: str | None) -> str | None:
    """The gate's ``license:<reason>`` for rows under a row ``license`` (a verdict, a non-compliant
    id, a policy's name, or ``unknown``, also for a non-string); None when they may go into an open release."""
    if not isinstance(license, str) or not license:
        return UNKNOWN
    return _reason(license)


@lru_cache(maxsize=4096)
def _reason(license: str) -> str | None:
    if license in VERDICTS:
        return license
    tree = _tree(license)
    return UNKNOWN if tree is None else _reason_of(tree)


def allows_release(spdx: str) -> bool:
    """True when rows under the row license ``spdx`` may go into an open-source-compliant release."""
    return reason(spdx) is None


def _compatible_ids(row: License, rel: License) -> bool:
    if row.spdx == rel.spdx or row.spdx in PUBLIC_DOMAIN_IDS:
        return True
    row_cc, rel_cc = _CC_RE.match(row.spdx), _CC_RE.match(rel.spdx)  # (family, version): one digit each
    return bool(row_cc and rel_cc and rel_cc[2] >= row_cc[2] and rel_cc[1] in (row_cc[1], "BY-SA"))


def _compatible_node(node: license_expr.Node, rel: License) -> bool:
    if isinstance(node, license_expr.Leaf):
        row = get(node.key)
        return row is not None and row.compliant and _compatible_ids(row, rel)
    got = (_compatible_node(a, rel) for a in node.args)
    return any(got) if node.op == "OR" else all(got)


def compatible(row_license: str, release_license: str) -> bool:
    """May rows under ``row_license`` go into a release under ``release_license`` (a compliant
    registry id)? Rules: docs/sources.md, "Compatibility"."""
    rel = get(release_license) if isinstance(release_license, str) else None
    if rel is None or not rel.compliant or not isinstance(row_license, str) or row_license in VERDICTS:
        return False
    tree = _tree(row_license)
    return tree is not None and _compatible_node(tree, rel)


def _why(code: str) -> str:
    if code == UNPARSEABLE:
        return "unparseable license (not a valid SPDX expression)"
    if code == VERSION_UNSPECIFIED:
        return ("license version unspecified (e.g. CC-BY without 4.0): say which in the source manifest's "
                "license_map (license_map: {CC-BY: CC-BY-3.0})")
    policy = next((p for p in policies() if p.name == code), None)
    if policy is not None:
        return policy.why
    entry = get(code)
    if entry is None:
        return "unknown license (not in licenses/registry.yaml)"
    terms = [t for t, on in (("non-commercial", entry.non_commercial), ("no-derivatives", entry.no_derivatives)) if on]
    return ", ".join(terms) if terms else "not open-source compliant (use restrictions)"


def why_not(spdx: str) -> str | None:
    """Why rows (or a model's outputs) under ``spdx`` cannot go into an open release; None if they can."""
    code = reason(spdx)
    if code is None:
        return None
    text = _why(code)
    return f"{code}: {text}" if isinstance(_tree(spdx), license_expr.Op) else text


def explain(raw: object, license_map: dict[str, str] | None = None, *, row: bool = False) -> str:
    """How a license string (``row``: a row's ``license``, maybe a verdict of ingest) was read, one line
    for ``granary licenses audit``."""
    if row and isinstance(raw, str) and raw in VERDICTS:
        return (f"{raw} (the verdict of ingest; the source's strings are in the rows' license_raw) "
                f"-> rejected license:{raw}")
    p = parse(raw, license_map)
    shown = p.raw if p.raw is None or len(p.raw) <= 80 else f"{p.raw[:60]}... ({len(p.raw)} characters)"
    head = f"{shown!r} -> {p.license}"
    if p.mapped:
        head += " (license_map: " + ", ".join(f"{a!r} read as {b}" for a, b in p.mapped) + ")"
    if p.license in VERDICTS:
        return f"{head} ({p.detail}) -> rejected license:{p.license}"
    tree = _tree(p.license)
    parts = []
    for leaf in license_expr.leaves(tree) if tree is not None else []:
        r = _leaf_reason(leaf)
        parts.append(f"{license_expr.render(leaf)}: {'ok' if r is None else _why(r)}")
    code = reason(p.license)
    verdict = "released" if code is None else f"rejected license:{code}"
    rule = ""
    if isinstance(tree, license_expr.Op):
        rule = " (OR: one suffices)" if tree.op == "OR" else " (AND: all must allow)"
    return f"{head} [{'; '.join(parts)}] -> {verdict}{rule}"


def declared(raw: str) -> str:
    """Registry id (or SPDX expression) of a license a pipeline declares for a model; ValueError
    saying what to write for anything :func:`normalize` does not know. Only validates: a declared
    non-commercial model may still run, its labels just cannot be released."""
    parsed = parse(raw)
    if parsed.license in VERDICTS:
        raise ValueError(f"model license {raw!r} is not in licenses/registry.yaml ({parsed.license}: "
                         f"{parsed.detail}): write one of its SPDX ids (e.g. Apache-2.0, MIT, CC-BY-4.0)")
    return parsed.license
