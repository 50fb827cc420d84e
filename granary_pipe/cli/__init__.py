"""The ``granary`` command line: it parses arguments and calls library functions; no logic here.
Commands by theme: ``curate``, ``data``, ``train``; ``common``: what they share."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from granary_pipe import __version__
from granary_pipe.cli import common, curate, data, train

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``granary`` and its subcommands."""
    shared = common.common_options()
    p = argparse.ArgumentParser(
        prog="granary", parents=[shared], formatter_class=common.Formatter,
        description="Curate open speech data: segment, identify the language, transcribe, filter and license-check "
                    "audio on Ray (or Apache Beam), then cut releases (Parquet, WebDataset, NeMo, Lhotse Shar), "
                    "report on them, download and verify them, and train a Conformer-CTC model on them.",
        epilog=common.examples_epilog(
            "granary run demo --out demo-run               # the bundled demo, end to end on a local Ray",
            "granary release demo-run --out demo-release",
            "granary report demo-release",
            "granary stages                                # what a pipeline file can use",
            "granary COMMAND --help                        # each command, with examples") + "\n\n" + common.EXIT_CODES)
    p.add_argument("--version", action="version", version=f"granary_pipe {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (curate, data, train):
        module.add_parsers(sub, [shared])
    return p


def _sigterm_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``granary`` console script; returns the exit code (see ``granary --help``)."""
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        return common.EXIT_INTERRUPTED
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a scheduler's stop ends like Ctrl-C (Ray's driver
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # installs its own handler for runs)
    name = args.command + (f" {args.licenses_command}" if getattr(args, "licenses_command", None) else "")
    return common.run_command(args.func, args, name)


if __name__ == "__main__":
    sys.exit(main())
