"""Number and table formatting shared by the terminal summary, the rule table and the HTML page."""

from __future__ import annotations

from typing import Any


def hms(hours: float | None) -> str:
    """Hours as ``h:mm:ss`` (None reads as 0)."""
    secs = int(round((hours or 0.0) * 3600))
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def pct(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` with one decimal; ``-`` when ``whole`` is 0."""
    return f"{100 * part / whole:.1f}%" if whole else "-"


def rate(value: float | None) -> str:
    """A fraction as a percentage with one decimal; ``-`` when unknown."""
    return "-" if value is None else f"{100 * value:.1f}%"


def text_table(headers: list[str], rows: list[list[Any]], indent: str = "  ") -> list[str]:
    """Aligned plain-text table lines: the first column left, the others right."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        out.append(indent + "  ".join(parts).rstrip())
        if n == 0:
            out.append(indent + "  ".join("-" * w for w in widths))
    return out
