"""What every ``granary`` command shares: exit codes, option types, ``-v``/``-q``, and turning an exception into
one line and an exit code. Design: docs/architecture.md (Command line, progress, bundled data)."""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any

from granary_pipe.io.parallel import is_local_disk_error

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES = f"""\
exit codes (every command):
  {EXIT_OK}    done
  {EXIT_CHECK_FAILED}    done, but a check failed: a unit failed, a file is missing or bad, a license
       violation, a job that did not succeed (or an unexpected internal error; -v shows
       its traceback)
  {EXIT_USAGE}    bad usage or input: a wrong option, a file that is missing or unreadable, an
       invalid config, an address that refuses the connection, a missing extra, no
       space left or no permission to write
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); rerunning a run, a download or a training resumes it
"""

EXTRAS = {"apache_beam": "beam", "torch": "train", "sentencepiece": "train", "webdataset": "train",
          "tensorboard": "train", "transformers": "llm", "vllm": "gpu", "pyannote": "diarize",
          "torchaudio": "diarize"}
"""Top-level module → the extra of ``granary_pipe`` that installs it."""

_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
DASHBOARD_PORT = 8265
CLUSTER_HELP = "auto, HOST:6379 (the head's GCS port) or ray://HEAD:10001"
DASHBOARD_HELP = "http://HEAD:8265"


class Formatter(argparse.HelpFormatter):
    """Wraps prose paragraphs; keeps blocks with indented lines (examples, tables) as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if len(lines) > 1 and any(line.startswith(" ") for line in lines[1:]):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(super()._fill_text(para, width, indent))
        return "\n\n".join(paragraphs)


def examples_epilog(*lines: str) -> str:
    """A ``--help`` epilog: ``examples:`` then each line indented by two spaces."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def command(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser], name: str,
            func: Callable[[argparse.Namespace], int] | None, *, examples: str | tuple[str, ...],
            help: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand that ``func`` runs; ``help`` and ``description`` default to ``func``'s docstring: its first
    line, and the paragraph after it with its lines joined."""
    doc = inspect.getdoc(func) if func is not None else None
    if doc and help is None:
        first, _, rest = doc.partition("\n")
        help, description = first.strip(), description or " ".join(rest.split())
    lines = (examples,) if isinstance(examples, str) else examples
    parser = sub.add_parser(name, parents=parents, formatter_class=Formatter, help=help, description=description,
                            epilog=examples_epilog(*lines))
    if func is not None:
        parser.set_defaults(func=func)
    return parser


def lang_list(value: str) -> list[str]:
    """``--lang en,de``: comma-separated ISO 639 codes."""
    langs = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in langs if not _LANG.match(v)]
    if not langs or bad:
        raise argparse.ArgumentTypeError(f"expected comma-separated ISO 639 language codes like en,de; got {value!r}")
    return langs


def format_list(value: str) -> list[str] | None:
    """``--formats parquet,wds`` or ``all`` (None); each name once, in the order given."""
    from granary_pipe.io.formats import FORMATS

    names = [v.strip() for v in value.split(",") if v.strip()]
    if names == ["all"]:
        return None
    unknown = [n for n in names if n not in FORMATS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected comma-separated formats from {', '.join(FORMATS)}, or all; "
                                         f"got {value!r}")
    return list(dict.fromkeys(names))


def _port(value: str) -> int | None:
    m = re.search(r":(\d+)/?$", value)
    return int(m[1]) if m else None


def cluster_address(value: str, source: str = "--ray-address") -> str:
    """A Ray cluster address; a dashboard URL is refused with the command that takes one."""
    v = value.strip()
    if re.match(r"^https?://", v, re.I) or _port(v) == DASHBOARD_PORT:
        raise argparse.ArgumentTypeError(
            f"{source} {value!r} is the dashboard (Jobs API) address; {source} takes a Ray cluster address: "
            f"{CLUSTER_HELP}. To send a run to a cluster's Jobs API: granary submit --dashboard {value}")
    if v in ("auto", "local") or v.startswith("ray://") or re.match(r"^[\w.\-]+:\d+$", v) \
            or re.match(r"^\[[0-9a-fA-F:]+\]:\d+$", v):
        return v
    raise argparse.ArgumentTypeError(f"{source} {value!r} is not a Ray cluster address: use {CLUSTER_HELP}")


def dashboard_url(value: str, source: str = "--dashboard") -> str:
    """The Ray dashboard URL of the Jobs API (``HEAD:8265`` gets ``http://``); a cluster address is refused
    with the option that takes one."""
    v = value.strip()
    if v in ("auto", "local") or v.startswith("ray://") or (not v.startswith("http") and _port(v) in (6379, 10001)):
        raise argparse.ArgumentTypeError(
            f"{source} {value!r} is a Ray cluster address (for granary run/train --ray-address); "
            f"{source} takes the dashboard URL of the Jobs API, e.g. {DASHBOARD_HELP}")
    if re.match(r"^https?://[^/\s]+", v, re.I):
        return v.rstrip("/")
    if re.match(r"^[\w.\-]+:\d+$", v):
        return f"http://{v}"
    raise argparse.ArgumentTypeError(f"{source} {value!r} is not a dashboard URL: use {DASHBOARD_HELP}")


def dashboard_from(args: argparse.Namespace) -> str:
    """``--dashboard``, else ``$RAY_JOB_ADDRESS``, else ``$RAY_ADDRESS`` when it is a URL, else the local one."""
    if args.dashboard:
        return args.dashboard
    if os.environ.get("RAY_JOB_ADDRESS"):
        return dashboard_url(os.environ["RAY_JOB_ADDRESS"], "RAY_JOB_ADDRESS")
    env = os.environ.get("RAY_ADDRESS", "")
    if re.match(r"^https?://", env):
        return env.rstrip("/")
    return f"http://127.0.0.1:{DASHBOARD_PORT}"


def common_options() -> argparse.ArgumentParser:
    """``-v``/``-q``, accepted before or after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log more; show the traceback of an unexpected error")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress and no summary (results and errors still print)")
    return p


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """Add ``--json`` (a flag) to ``parser``, its help "print WHAT as JSON on stdout"."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")


def print_json(obj: Any) -> None:
    """JSON on stdout, keys sorted, non-JSON values as strings."""
    print(json.dumps(obj, indent=2, sort_keys=True, default=str, ensure_ascii=False))


def quiet(args: argparse.Namespace) -> bool:
    """Whether ``--quiet`` was given (False for a command without the option)."""
    return bool(getattr(args, "quiet", False))


def _errno_text(exc: OSError) -> str:
    texts = {errno.ENOSPC: "no space left on device", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system",
             errno.ENOENT: "no such file or directory", errno.EDQUOT: "disk quota exceeded",
             errno.ENOTDIR: "not a directory", errno.EISDIR: "is a directory",
             errno.ECONNREFUSED: "connection refused"}
    text = texts.get(exc.errno or -1) or (exc.strerror or str(exc)).lower()
    return f"{text}: {exc.filename}" if exc.filename else text


def _requests_text(exc: Exception) -> str | None:
    """One line for a ``requests`` connection error, else None."""
    import requests

    if not isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return None
    from granary_pipe.io.download import describe_connection_error

    return describe_connection_error(exc)


def describe_error(exc: BaseException, writing: str | os.PathLike | None = None) -> tuple[str, int]:
    """(one line for the user, exit code) of an exception; ``writing`` is named when a disk error names no file."""
    from granary_pipe.config import ConfigError

    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        extra = EXTRAS.get(top)
        if extra:
            return (f"this needs the [{extra}] extra ({top} is not installed): "
                    f"pip install 'granary_pipe[{extra}]'", EXIT_USAGE)
        return f"{top} is not installed ({exc}); reinstall granary_pipe", EXIT_USAGE
    text = _requests_text(exc) if isinstance(exc, Exception) else None
    if text:
        return text, EXIT_USAGE
    if isinstance(exc, OSError) and exc.errno is not None:
        text = _errno_text(exc)
        if exc.filename is None and writing is not None and is_local_disk_error(exc):
            text += f" (writing {writing})"
        return text, EXIT_USAGE
    if isinstance(exc, (ConfigError, ValueError, OSError, RuntimeError, LookupError, TimeoutError)):
        return str(exc).strip() or type(exc).__name__, EXIT_USAGE
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"internal error: {type(exc).__name__}: {first} (rerun with -v for the traceback)", EXIT_CHECK_FAILED


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, name: str) -> int:
    """Call a command; map Ctrl-C to 130 and every error to one line and its exit code."""
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"\ngranary {name}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except BrokenPipeError:  # `granary sources | head`: the reader left; nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, an exit code
        line, code = describe_error(exc, getattr(args, "out", None) or getattr(args, "html", None))
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"granary {name}: error: {line}", file=sys.stderr, flush=True)
        return code
