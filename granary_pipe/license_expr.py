"""SPDX license expressions (``MIT OR Apache-2.0``, ``Apache-2.0 WITH LLVM-exception``): syntax only, by the
``license-expression`` package plus the rules it leaves lenient. Design: docs/sources.md, "Licenses"."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, pairwise
from typing import Any

OPERATORS = frozenset({"AND", "OR", "WITH"})
MAX_DEPTH = 8
"""Deeper parentheses are refused as unparseable (a guard against hostile strings; real ones nest 1-2)."""
_PARENS = frozenset({"(", ")"})
_TOKEN_RE = re.compile(r"\(|\)|[^\s()]+")  # parentheses and whitespace-separated words
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+\-]*$")


class ExpressionSyntaxError(ValueError):
    """A string written as an SPDX expression that does not parse (``MIT OR``, ``(MIT``)."""


@dataclass(frozen=True)
class Leaf:
    """One license id, with the SPDX exception it is taken ``WITH`` (if any)."""

    key: str
    exception: str | None = None


@dataclass(frozen=True)
class Op:
    """``AND`` or ``OR`` over two or more operands."""

    op: str
    args: tuple[Leaf | Op, ...]


Node = Leaf | Op


@lru_cache(maxsize=1)
def spdx_licensing() -> Any:
    """The ``license_expression`` Licensing of the SPDX list it ships (loaded once)."""
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def is_id(token: str) -> bool:
    """True when ``token`` has the shape of a license id (``CC-BY-4.0``, ``LicenseRef-x``, ``GPL-2.0+``)."""
    return bool(_ID_RE.match(token)) and token not in OPERATORS


def looks_like_expression(text: str) -> bool:
    """True when ``text`` is written as an SPDX expression: ids, upper-case operators and
    parentheses, no two ids side by side (``CC BY 4.0 or CC0`` is prose)."""
    toks = _TOKEN_RE.findall(text)
    if not toks or not all(t in OPERATORS or t in _PARENS or is_id(t) for t in toks):
        return False
    return not any(is_id(a) and is_id(b) for a, b in pairwise(toks))


def substitute(text: str, replace: Callable[[str], str | None]) -> str:
    """``text`` with each id token replaced by ``replace(token)`` where that is not None."""
    out = []
    for t in _TOKEN_RE.findall(text):
        new = None if t in OPERATORS or t in _PARENS else replace(t)
        out.append(t if new is None else new)
    return " ".join(out)


def is_known_spdx(key: str) -> bool:
    """True when ``key`` is an id of the SPDX license list (any case)."""
    sym = spdx_licensing().known_symbols_lowercase.get(key.lower())
    return sym is not None and not sym.is_exception


def is_spdx_exception(key: str) -> bool:
    """True when ``key`` (any case) is a known SPDX exception id (the right side of ``WITH``)."""
    sym = spdx_licensing().known_symbols_lowercase.get(key.lower())
    return sym is not None and bool(sym.is_exception)


def parse(text: str) -> Node:
    """The expression tree of ``text``; :class:`ExpressionSyntaxError` (with the reason) when it
    does not parse. Known SPDX ids come back in their canonical spelling, others as written."""
    from license_expression import PARSE_INVALID_SYMBOL_AS_EXCEPTION, ExpressionError

    toks = _TOKEN_RE.findall(text)
    if max(accumulate((t == "(") - (t == ")") for t in toks), default=0) > MAX_DEPTH:
        raise ExpressionSyntaxError(f"parentheses nested deeper than {MAX_DEPTH}")
    if toks.count("(") != toks.count(")"):
        raise ExpressionSyntaxError(f"unbalanced parentheses ({toks.count('(')} opened, {toks.count(')')} closed)")
    lower_ops = sorted({t for t in toks if t not in OPERATORS and t.upper() in OPERATORS})
    if lower_ops:
        raise ExpressionSyntaxError(f"operators are upper case in SPDX (AND, OR, WITH), not {', '.join(lower_ops)}")
    try:
        tree = spdx_licensing().parse(" ".join(toks), validate=False, strict=True)
    except ExpressionError as err:
        if getattr(err, "error_code", None) == PARSE_INVALID_SYMBOL_AS_EXCEPTION:
            raise ExpressionSyntaxError(f"{getattr(err, 'token_string', '?')!s} after WITH is not an SPDX "
                                        "exception") from None
        raise ExpressionSyntaxError(str(err).split(" for token:")[0]) from None
    except Exception as err:  # the package's internal errors on hostile input
        raise ExpressionSyntaxError(f"not an SPDX expression ({type(err).__name__})") from None
    if tree is None:
        raise ExpressionSyntaxError("empty expression")
    return _convert(tree)


def _convert(node: Any) -> Node:
    from license_expression import LicenseSymbol, LicenseWithExceptionSymbol

    if isinstance(node, LicenseWithExceptionSymbol):
        lic, exc = node.license_symbol.key, node.exception_symbol.key
        _one_id(lic)
        _one_id(exc)
        return Leaf(lic, exc)
    if isinstance(node, LicenseSymbol):
        _one_id(node.key)
        return Leaf(node.key)
    name = type(node).__name__.upper()
    if name not in ("AND", "OR"):
        raise ExpressionSyntaxError(f"unexpected {type(node).__name__} in an SPDX expression")
    return Op(name, tuple(_convert(a) for a in node.args))


def _one_id(key: str) -> None:
    if not is_id(key):
        raise ExpressionSyntaxError(f"{key!r} is not one license id (ids are joined by AND, OR or WITH)")


def render(node: Node) -> str:
    """The expression as text: ``A WITH e``, operands of a nested operator in parentheses."""
    if isinstance(node, Leaf):
        return f"{node.key} WITH {node.exception}" if node.exception else node.key
    parts = [f"({render(a)})" if isinstance(a, Op) else render(a) for a in node.args]
    return f" {node.op} ".join(parts)


def leaves(node: Node) -> list[Leaf]:
    """The leaves of ``node``, left to right (duplicates kept)."""
    if isinstance(node, Leaf):
        return [node]
    return [leaf for a in node.args for leaf in leaves(a)]


def map_leaves(node: Node, fn: Callable[[Leaf], Leaf]) -> Node:
    """The tree with each leaf replaced by ``fn(leaf)``."""
    if isinstance(node, Leaf):
        return fn(node)
    return Op(node.op, tuple(map_leaves(a, fn) for a in node.args))
