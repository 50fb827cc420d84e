"""Renamed and removed stage parameters: old keys keep working for one release, with a warning.

A stage lists its renamed parameters in ``RENAMED`` (a class attribute: old key → new key, or
→ None for a parameter that was removed because it did nothing). Keys of nested options are
dotted (``resolve.text_min_prob``). :func:`upgrade` moves old keys to their new names and says
what it moved; :func:`granary_pipe.config.load_pipeline` warns naming the file, the line, the
old key and the new one, and ``Stage`` itself warns when it is built from Python with an old key.
:func:`previous_names` turns the new names back, so a run's fingerprint stays what the previous
release computed and a run started with it can be resumed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("granary_pipe.config")

Renamed = Mapping[str, "str | None"]
"""Old dotted key → new dotted key (None: removed)."""


def _pop(params: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    *parents, leaf = dotted.split(".")
    for key in parents:
        params = params.get(key)
        if not isinstance(params, dict):
            return False, None
    return (True, params.pop(leaf)) if leaf in params else (False, None)


def _has(params: dict[str, Any], dotted: str) -> bool:
    *parents, leaf = dotted.split(".")
    for key in parents:
        params = params.get(key)
        if not isinstance(params, dict):
            return False
    return leaf in params


def _put(params: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        params = params.setdefault(key, {})
    params[leaf] = value


def upgrade(params: Mapping[str, Any], renamed: Renamed) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``params`` with every old key under its new name, and ``(old key, message)`` per key moved.

    A removed key is dropped when it holds None (what it accepted), and kept otherwise so that
    validation refuses it. Giving both the old and the new name is a ValueError naming both."""
    out = copy.deepcopy(dict(params))
    notes = []
    for old, new in renamed.items():
        if not _has(out, old):
            continue
        if new is None:
            if params_value(out, old) is None:
                _pop(out, old)
                notes.append((old, f"{old} is removed: it accepted only null; delete it"))
            continue  # any other value stays, and validation refuses it as an unknown key
        if _has(out, new):
            raise ValueError(f"{old} and {new} both given; {old} is the old name of {new}: keep {new} only")
        _put(out, new, _pop(out, old)[1])
        notes.append((old, f"{old} is now {new}"))
    return out, notes


def params_value(params: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key of nested mappings (None when absent)."""
    node: Any = params
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def previous_names(params: Mapping[str, Any], renamed: Renamed) -> dict[str, Any]:
    """``params`` (a stage's resolved parameters) under the names the previous release used:
    new keys back to old ones, removed keys back with None."""
    out = copy.deepcopy(dict(params))
    for old, new in renamed.items():
        if new is None:
            _put(out, old, None)
        elif _has(out, new):
            _put(out, old, _pop(out, new)[1])
    return out


def warn(where: str, note: str) -> None:
    """Log one deprecation line: ``WHERE: OLD is now NEW (still accepted until the next release)``."""
    log.warning("%s: %s (still accepted until the next release)", where, note)
