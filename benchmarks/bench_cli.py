"""What the scale benchmarks share: run ``granary`` as a subprocess and measure it, serve a
directory over loopback HTTP, and print tables.

:func:`granary` times one CLI command and measures its memory two ways: the peak RSS of the
largest single process of its tree (``/usr/bin/time``'s ``%M``: the maximum resident set size of
the command and the descendants it waited for; it must be measured through a small launcher,
because a child forked, or vforked, from this Python process and then exec'd starts its
``ru_maxrss`` at this process's own RSS; without ``/usr/bin/time``, ``wait4``'s figure, which
carries that floor) and the peak of the whole tree's summed RSS, sampled from
``/proc`` every :data:`SAMPLE_S` seconds (Ray's workers, started by an embedded Ray under the
command, are descendants too; a sampled peak can miss a short spike, so it is never reported
below the single-process peak).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
CODE = {"checkout": ROOT}
"""The checkout whose ``granary_pipe`` the commands run (``--checkout`` of the scripts; default this one)."""
SAMPLE_S = 0.2
TIME = "/usr/bin/time"
MB = 1e6


@dataclass
class Measured:
    """One command's figures."""

    args: list[str]
    wall_s: float
    peak_rss_mb: float  # largest single process of the tree (wait4)
    tree_rss_mb: float  # peak of the tree's summed RSS (sampled)
    rc: int
    stdout: str = ""
    stderr: str = ""
    extra: dict = field(default_factory=dict)
    cpu_s: float = 0.0  # user + system CPU of the command and the children it waited for (not Ray's workers)


def cli_env(extra_path: list[Path] | None = None) -> dict[str, str]:
    """The environment of a ``granary`` subprocess: the checkout (:data:`CODE`) first on
    PYTHONPATH, no inherited RAY_ADDRESS (an embedded Ray, as a user on one machine gets)."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    paths = [str(CODE["checkout"]), *(str(p) for p in extra_path or [])]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _children() -> dict[int, list[int]]:
    """ppid -> pids of every process visible in /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_rss_mb(pid: int) -> float:
    """Summed RSS (MB) of ``pid`` and all its descendants, now."""
    kids, todo, total = _children(), [pid], 0
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total / MB


def granary(*args: str, env: dict[str, str] | None = None, check: bool = True, prefix: list[str] | None = None,
            cwd: Path | None = None, timeout_s: float | None = None) -> Measured:
    """Run ``python -m granary_pipe.cli ARGS`` (or ``prefix + ARGS``) and measure it.

    ``check``: raise ``SystemExit`` naming the command and its stderr's tail on a non-zero exit."""
    cmd = (prefix or [sys.executable, "-m", "granary_pipe.cli"]) + list(args)
    rss_file = None
    if os.access(TIME, os.X_OK):
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        cmd = [TIME, "-f", "%M", "-o", rss_file, *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or cli_env(), cwd=cwd or CODE["checkout"])
    peak_tree, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_S):
            peak_tree[0] = max(peak_tree[0], tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for r in readers:
        r.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:  # wait4 gives this child's own rusage (its tree's largest peak), not all children's
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = ru.ru_maxrss / 1024 * 1.048576  # KiB -> MB
    if rss_file is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            peak = int(Path(rss_file).read_text().split()[-1]) * 1024 / MB
        os.unlink(rss_file)
    m = Measured(list(args), wall, peak, max(peak, peak_tree[0]), proc.returncode,
                 "".join(out), "".join(err), cpu_s=ru.ru_utime + ru.ru_stime)
    if check and m.rc:
        raise SystemExit(f"granary {' '.join(args)} failed (exit {m.rc}):\n{m.stderr[-3000:]}")
    return m


def add_checkout_option(ap) -> None:
    """``--checkout DIR``: run the commands from another checkout (a before/after comparison)."""
    ap.add_argument("--checkout", type=Path, default=None,
                    help="checkout whose granary_pipe the commands run (default: this one)")


def use_checkout(path: Path | None) -> None:
    """Make the commands run ``path``'s granary_pipe (None: this checkout)."""
    path = Path(path or ROOT).resolve()
    if not (path / "granary_pipe" / "__init__.py").is_file():
        raise SystemExit(f"--checkout {path}: no granary_pipe/__init__.py there")
    CODE["checkout"] = path


def help_text(*command: str) -> str:
    """``granary COMMAND --help`` (to detect options that may not exist yet)."""
    return granary(*command, "--help", check=False).stdout


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(root: Path, start_timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``root`` with ``python -m http.server`` on 127.0.0.1 (its own process); yields the
    base URL; the server is stopped on exit, whatever happens."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"http.server on {url} did not start (exit {proc.poll()})") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dir_bytes(root: Path) -> int:
    """Bytes of every regular file under ``root``."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A Markdown table (the README pastes it as it is)."""
    def cell(v: object) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(cell(v) for v in r) + " |")
    sys.stdout.flush()
