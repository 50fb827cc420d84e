"""Number and table formatting, the one home of it (report, ``granary sources``, ``granary licenses
audit``, progress lines)."""

from __future__ import annotations

from typing import AbstractSet, Any


def clock(seconds: float | None) -> str:
    """Seconds as ``h:mm:ss`` (None and negative read as 0)."""
    secs = max(0, int(round(seconds or 0.0)))
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def hms(hours: float | None) -> str:
    """Hours as ``h:mm:ss`` (None reads as 0)."""
    return clock((hours or 0.0) * 3600)


def hours_of(seconds: float | None) -> str:
    """Seconds as decimal hours: three decimals below 1000 h, whole thousands-separated above; ``-`` when unknown."""
    if seconds is None:
        return "-"
    h = seconds / 3600
    return f"{h:.3f}" if h < 1000 else f"{h:,.0f}"


def rounded_hours(hours: float | None) -> str:
    """Hours to one decimal below 10 h, whole (thousands-separated) above; ``-`` when unknown."""
    if hours is None:
        return "-"
    return f"{hours:,.0f}" if hours >= 10 else f"{hours:,.1f}"


def count(value: int | None) -> str:
    """A count, ``-`` when unknown."""
    return "-" if value is None else str(value)


def megabytes(n: float) -> str:
    """Bytes as ``12.3 MB`` (10^6 bytes)."""
    return f"{n / 1e6:.1f} MB"


def pct(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` with one decimal; ``-`` when ``whole`` is 0."""
    return f"{100 * part / whole:.1f}%" if whole else "-"


def rate(value: float | None) -> str:
    """A fraction as a percentage with one decimal; ``-`` when unknown."""
    return "-" if value is None else f"{100 * value:.1f}%"


CELL_CHARS = 80
"""Widest cell of a terminal table: longer values (a long path in a reason) are cut in the middle."""


def clip(value: Any, width: int = CELL_CHARS) -> str:
    """``value`` as text of at most ``width`` characters: a longer one keeps its start and end around a ``…``."""
    text = str(value)
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return f"{text[:width - 1 - tail]}…{text[len(text) - tail:]}"


def text_table(headers: list[str], rows: list[list[Any]], indent: str = "  ",
               right: AbstractSet[int] | None = None) -> list[str]:
    """Aligned plain-text table lines, dashes under the headers; columns in ``right`` right-aligned
    (default: all but the first), cells :func:`clip`ped, line breaks shown as ``⏎``."""
    cells = [headers] + [[clip(str(c).replace("\n", "⏎")) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = set(range(1, len(headers))) if right is None else right
    out = []
    for n, r in enumerate(cells):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append(indent + "  ".join(parts).rstrip())
        if n == 0:
            out.append(indent + "  ".join("-" * w for w in widths))
    return out


def plain_table(headers: list[str], rows: list[list[Any]], right: AbstractSet[int] = frozenset()) -> str:
    """:func:`text_table` as one string, unindented, columns left-aligned except ``right``."""
    return "\n".join(text_table(headers, rows, indent="", right=right))
