"""The HTML report's figures: matplotlib rendered to inline SVG strings (no pyplot, text as paths,
ids prefixed per figure, Okabe-Ito colours)."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.typing import RcKeyType

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
KEPT, REJECTED, INPUT = "#0072B2", "#D55E00", "#999999"

_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "path", "text.parse_math": False, "font.size": 9, "axes.titlesize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e4e4e4",
    "axes.axisbelow": True, "legend.frameon": False}
_WIDTH_IN = 8.0


def _label(s: object, width: int = 38) -> str:
    text = " ".join(str(s).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _svg(fig: Figure, key: str) -> str:
    """The figure as an ``<svg>`` element: no XML prolog, metadata, size or namespaces."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    head, rest = svg.split(">", 1)
    head = re.sub(r'\s(?:width|height|xmlns(?::\w+)?)="[^"]*"', "", head)
    svg = f'{head} role="img">{rest}'
    svg = re.sub(r'\bid="', f'id="{key}-', svg)
    svg = svg.replace('href="#', f'href="#{key}-').replace("url(#", f"url(#{key}-")
    return svg


def _style(key: str) -> AbstractContextManager[None]:
    """The figures' rc settings, with SVG hashes salted by ``key``."""
    return matplotlib.rc_context({**_RC, "svg.hashsalt": key})


def _figure(rows: float = 0, height_in: float | None = None, width_in: float = _WIDTH_IN) -> Figure:
    height = height_in if height_in is not None else 1.0 + 0.28 * max(rows, 2)
    return Figure(figsize=(width_in, height), layout="constrained")


def bars(key: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], *, xlabel: str,
         stacked: bool = False, colors: Sequence[str] | None = None, fmt: str = "{:g}",
         integer: bool = False) -> str:
    """Horizontal bars per label, one bar per series (grouped) or one stacked bar."""
    with _style(key):
        n = len(series)
        fig = _figure(rows=len(labels) * (1 if stacked else max(1, n) * 0.7))
        ax = fig.add_subplot()
        colors = list(colors or OKABE_ITO)
        ys = range(len(labels))
        height = 0.8 if stacked else 0.8 / max(n, 1)
        left = [0.0] * len(labels)
        for i, (name, values) in enumerate(series.items()):
            pos = list(ys) if stacked else [y - 0.4 + height * (i + 0.5) for y in ys]
            b = ax.barh(pos, values, height=height, left=left if stacked else None,
                        color=colors[i % len(colors)], label=_label(name, 24))
            if not stacked:
                ax.bar_label(b, labels=[fmt.format(v) if v else "" for v in values], padding=2, fontsize=7)
            else:
                left = [a + b_ for a, b_ in zip(left, values, strict=True)]
        if stacked:
            ax.bar_label(b, labels=[fmt.format(v) for v in left], padding=2, fontsize=7)
        ax.set_yticks(list(ys), [_label(x) for x in labels])
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        ax.margins(x=0.08)
        if integer:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if n > 1:
            fig.legend(loc="outside right upper", fontsize=8)
        return _svg(fig, key)


def retention(key: str, stages: Sequence[str], rows: Sequence[int], hours: Sequence[float], *,
              hours_label: str = "hours remaining") -> str:
    """Rows and hours remaining after each stage (the first point is the input)."""
    with _style(key):
        fig = _figure(height_in=3.2)
        axes = fig.subplots(1, 2)
        x = list(range(len(stages)))
        for ax, values, title, color, fmt in ((axes[0], rows, "rows remaining", KEPT, "{:d}"),
                                               (axes[1], hours, hours_label, OKABE_ITO[2], "{:.3g}")):
            ax.step(x, values, where="mid", color=color, linewidth=1.5)
            ax.plot(x, values, "o", color=color, markersize=4)
            top = max(values) if values and max(values) > 0 else 1
            for xi, v in zip(x, values, strict=True):
                ax.annotate(fmt.format(v), (xi, v), textcoords="offset points", xytext=(0, 5),
                            ha="center", fontsize=7)
            ax.set_ylim(0, top * 1.15)
            ax.set_xticks(x, [_label(s, 22) for s in stages], rotation=40, ha="right", fontsize=8)
            ax.set_title(title)
            ax.grid(axis="x", visible=False)
        return _svg(fig, key)


def histogram(key: str, series: dict[str, tuple[Any, Any] | None], *, xlabel: str,
              colors: Sequence[str] = (KEPT, REJECTED)) -> str:
    """Stacked histogram of binned series: per series (bin edges, counts), None when it has no value."""
    with _style(key):
        fig = _figure(height_in=2.6, width_in=4.6)
        ax = fig.add_subplot()
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        binned = {k: v for k, v in series.items() if v is not None}
        if binned:
            names = list(binned)
            edges = binned[names[0]][0]
            ax.hist([edges[:-1]] * len(names), bins=edges, weights=[binned[k][1] for k in names], stacked=True,
                    color=[colors[list(series).index(k) % len(colors)] for k in names],
                    label=[f"{k} ({int(binned[k][1].sum())})" for k in names], edgecolor="white", linewidth=0.4)
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no rows with a value", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rows")
        ax.grid(axis="x", visible=False)
        return _svg(fig, key)
