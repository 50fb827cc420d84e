"""Progress of long commands: a tqdm bar on a terminal, plain lines elsewhere (a log, CI), never a ``\\r``;
``GRANARY_PROGRESS`` (``bar``, ``lines`` or ``off``) overrides the choice.
Design: docs/architecture.md, "Command line, progress, bundled data"."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, TextIO

from tqdm import tqdm

from granary_pipe.report.fmt import clock, megabytes

MODES = ("bar", "lines", "off")

LINES_EVERY_S = 5.0
"""Least seconds between two progress lines of many small steps, unless another tenth of the work is done sooner."""


def mode(enabled: bool = True, stream: TextIO | None = None) -> str:
    """``bar`` on a terminal, ``lines`` elsewhere, ``off`` when disabled; ``GRANARY_PROGRESS`` wins."""
    if not enabled:
        return "off"
    forced = os.environ.get("GRANARY_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced
    stream = stream or sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


class Progress:
    """A counter shown as a bar or as lines; thread-safe. ``desc`` is the first word of every line;
    ``unit`` ``"B"`` counts bytes (shown as MB); ``initial`` steps were done before (not in the rate);
    ``every_s``: lines mode prints after this many seconds or another tenth of ``total`` (0: at every
    update); ``note`` gives extra text after each update; ``stream`` default stderr."""

    def __init__(self, total: float, *, desc: str, unit: str = "unit", initial: float = 0, enabled: bool = True,
                 every_s: float = 0.0, note: Callable[[], str] | None = None, stream: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.every_s, self.note = total, desc, unit, every_s, note
        self.done = initial
        self._initial = initial
        self._stream = stream or sys.stderr
        self._mode = mode(enabled, self._stream)
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._last_line = float("-inf")
        self._printed_done = initial
        self._printed_tenth = self._tenth(initial)
        self._printed_end = False
        self._closed = False
        self._bar = None
        if self._mode == "bar":
            kw = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
            self._bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True,
                             file=self._stream, **kw)

    def update(self, n: float = 1) -> None:
        """Count ``n`` more steps (negative to take back bytes that must be fetched again)."""
        if not n:
            return
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
                if self.note:
                    self._bar.set_postfix_str(self.note(), refresh=False)
            elif self._mode == "lines" and n > 0 and self._line_due():
                self._last_line, self._printed_done = time.monotonic(), self.done
                self._printed_tenth = self._tenth(self.done)
                self._print(self.line())

    def _tenth(self, done: float) -> int:
        return int(10 * done // self.total) if self.total else 0

    def _line_due(self) -> bool:
        """Lines mode: whether this update prints (see ``every_s``); the end prints once."""
        if self.done >= self.total:
            if self._printed_end:
                return False
            self._printed_end = True
            return True
        return (not self.every_s or time.monotonic() - self._last_line >= self.every_s
                or self._tenth(self.done) > self._printed_tenth)

    def line(self) -> str:
        """The status line: done/total, percentage, rate, elapsed time and ETA."""
        elapsed = time.monotonic() - self._t0
        new = self.done - self._initial
        count = (f"{megabytes(self.done)}/{megabytes(self.total)}" if self.unit == "B"
                 else f"{self.done:g}/{self.total:g} {self.unit}s")
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {count}{pct}"]
        if self.note:
            parts.append(self.note())
        if new > 0 and elapsed > 0:
            rate = new / elapsed
            parts.append(f"{rate / 1e6:.1f} MB/s" if self.unit == "B" else f"{rate * 60:.2f} {self.unit}s/min")
            left = max(self.total - self.done, 0) / rate
            parts.append(f"{clock(elapsed)} elapsed, ETA {clock(left)}")
        else:
            parts.append(f"{clock(elapsed)} elapsed")
        return ", ".join(parts)

    def write(self, message: str) -> None:
        """A message line that does not break the bar."""
        with self._lock:
            if self._bar is not None:
                self._bar.write(message, file=self._stream)
            elif self._mode != "off":
                self._print(message)

    def _print(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def close(self) -> None:
        """End the bar; in lines mode print the last line unless it is already out."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.close()
            elif self._mode == "lines" and self.done != self._printed_done:  # throttled: say where it ended
                self._print(self.line())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
