"""``granary release``, ``report``, ``download``, ``verify``, ``sources`` and ``licenses``: the
corpus after a run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from granary_pipe.cli import common


def _cmd_release(args: argparse.Namespace) -> int:
    """cut a release (Parquet + WebDataset shards; NeMo, Lhotse Shar on request) from a run

    Cut the kept rows of RUN's committed units into per-language shards under OUT, with release.json
    (sha256 of every file), ATTRIBUTION.md and a dataset card. Rows whose license does not allow the
    release license stay out (counted). The same run and options give byte-identical files, however
    many workers write them. Shards are written by --workers processes (an embedded local Ray when
    more than 1) or on a Ray cluster (--ray-address); a killed release resumes shard by shard when
    the same command runs again.
    """
    from granary_pipe.io.formats import FORMATS
    from granary_pipe.io.release import build_release

    rel = build_release(Path(args.run), Path(args.out), shard_rows=args.shard_rows, shard_bytes=args.shard_bytes,
                        langs=args.lang, seed=args.seed, progress=not common.quiet(args), overwrite=args.overwrite,
                        release_license=args.release_license,
                        formats=FORMATS if args.formats is None else args.formats,
                        workers=args.workers, ray_address=args.ray_address)
    totals = rel["totals"]
    excluded = rel["excluded"]["by_license"]
    if args.json:
        common.print_json({"release": str(args.out), "rows": totals["rows"], "hours": totals["hours"],
                    "files": len(rel["shards"]), "bytes": totals["bytes"], "languages": sorted(totals["per_lang"]),
                    "release_license": rel["release_license"], "excluded_by_license": excluded})
        return common.EXIT_OK
    sizes = ", ".join(f"{fmt} {n / 1e6:.1f} MB" for fmt, n in totals["bytes"].items())
    print(f"release {args.out}: {totals['rows']} rows, {totals['hours']:.4f} h, {len(rel['shards'])} files ({sizes})")
    if excluded:
        print(f"left out, license not compatible with {rel['release_license']}: "
              + ", ".join(f"{lic} {n} rows" for lic, n in excluded.items()))
    return common.EXIT_OK


def _cmd_download(args: argparse.Namespace) -> int:
    """download a release (release.json URL or path): verified, resumable

    Fetch every file release.json lists into OUT: parallel, resumable (HTTP Range), each checked by
    sha256 (a bad one is fetched once more), retried with backoff. SOURCE: http(s) URL, fsspec URL
    (file://, s3://, ...) or path, of release.json or its directory. Ctrl-C stops at once (queued
    files are not started; partial files resume next time). Exit 1 if any file failed (listed).
    """
    from granary_pipe.io.download import download_release

    report = download_release(args.source, Path(args.out), jobs=args.jobs, langs=args.lang, formats=args.formats,
                              retries=args.retries, progress=not common.quiet(args))
    if args.json:
        common.print_json(report.to_dict())
    else:
        print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return common.EXIT_OK if report.passed else common.EXIT_CHECK_FAILED


def _cmd_verify(args: argparse.Namespace) -> int:
    """check a downloaded release, or a run's committed units: sha256 and size of every file

    DIR holding release.json: check the files it lists (the selection of the download that made
    DIR, unless --lang/--formats say otherwise). DIR holding run.json (a run directory): check every
    file of every committed unit against the size and sha256 its _COMMITTED marker records (a
    resumed run checks sizes only; this finds a byte changed in place). --jobs files (releases) or
    units (runs) at a time. Exit 1 listing missing and bad files, one per line; 0 when all match.
    """
    from granary_pipe.io.verify import VerifyReport, verify_release
    from granary_pipe.io.verify_run import RunVerifyReport, is_run_dir, verify_run

    report: RunVerifyReport | VerifyReport
    if is_run_dir(args.dir):
        if args.lang is not None or args.formats is not None:
            raise ValueError(f"{args.dir} is a run directory: --lang/--formats select release files; "
                             "a run is checked whole")
        report = verify_run(Path(args.dir), jobs=args.jobs, progress=not common.quiet(args))
        counts = f"{report.units} units, {report.files_ok} files ok"
    else:
        report = verify_release(Path(args.dir), langs=args.lang, formats=args.formats, jobs=args.jobs,
                                progress=not common.quiet(args))
        counts = f"{len(report.ok)} ok"
    if args.json:
        common.print_json(report.to_dict())
        return common.EXIT_OK if report.passed else common.EXIT_CHECK_FAILED
    for line in report.lines():
        print(line, file=sys.stderr)
    status = "ok" if report.passed else "FAILED"
    print(f"verify {args.dir}: {status}: {counts}, {len(report.missing)} missing, {len(report.bad)} bad")
    return common.EXIT_OK if report.passed else common.EXIT_CHECK_FAILED


def _cmd_report(args: argparse.Namespace) -> int:
    """summarize a run or a release

    Summarize a run (rows in = kept + rejected, rejection reasons per rule, hours, languages, time
    per stage, reference WER where the listing has text) or a release (files, rows, hours per
    language and format).
    """
    from granary_pipe.report.summary import summarize
    from granary_pipe.report.text import format_summary

    summary = summarize(Path(args.path))
    print(json.dumps(summary, indent=2, sort_keys=True, default=str) if args.json else format_summary(summary))
    if args.html:
        from granary_pipe.report.html import write_html

        write_html(Path(args.path), args.html, summary=summary)
        print(f"HTML report: {args.html}", file=sys.stderr)
    return common.EXIT_OK


def _cmd_sources(args: argparse.Namespace) -> int:
    """list the source catalog: corpus, languages, hours, license, compliant?, labelled

    List the open corpora of the source catalog (shipped with the package; manifests/catalog in a
    checkout): languages, published hours, license (registry id), whether it is open-source
    compliant, labelled or not, and how many facts were confirmed on the corpus's pages.
    """
    from granary_pipe import catalog

    entries = catalog.load_catalog(args.catalog)
    if args.lang:
        entries = [e for e in entries if set(args.lang) & set(e.info.languages)]
    rows = catalog.sources_rows(entries, langs=args.lang)
    print(json.dumps(rows, indent=2) if args.json else catalog.format_sources(rows, langs=args.lang))
    return common.EXIT_OK


def _cmd_licenses_audit(args: argparse.Namespace) -> int:
    """license compliance matrix of a manifest, catalog, run or release; exit 1 on any violation

    Print rows/hours per source and license (compliant?, BY/SA/NC/ND) and each model's license. Exit
    1 when a kept or released row has a non-compliant, unknown or release-incompatible license, when
    a model's license forbids releasing its outputs, or when a manifest's license is not compliant
    or not recognised; 0 otherwise; 2 on errors.
    """
    from granary_pipe import audit

    report = audit.audit_path(args.path, release_license=args.release_license)
    print(audit.to_json(report) if args.json else audit.format_report(report))
    return report.exit_code


def _formats_help() -> str:
    from granary_pipe.io.formats import FORMATS

    return f"comma-separated formats: {', '.join(FORMATS)}, or all"


def _add_selection(parser: argparse.ArgumentParser, default: str, jobs: str) -> None:
    """``--lang``, ``--formats`` and ``--jobs`` of download and verify."""
    parser.add_argument("--jobs", type=int, default=4, help=f"{jobs} (default 4)")
    parser.add_argument("--lang", type=common.lang_list, default=None, metavar="LANGS",
                        help=f"comma-separated languages, e.g. en,de (default: {default})")
    parser.add_argument("--formats", type=common.format_list, default=None, metavar="FORMATS",
                        help=f"{_formats_help()} (default: {default})")


def add_parsers(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Register the release, report, download and catalog commands."""
    from granary_pipe.io.formats import DEFAULT_FORMATS

    rel = common.command(sub, parents, "release", _cmd_release,
        examples=("granary release demo-run --out demo-release",
                  "granary release RUN --out REL --lang en,de --formats all --release-license CC-BY-4.0",
                  "granary release RUN --out REL --workers 8            # 8 shard writers on a local Ray",
                  "granary release /shared/RUN --out /shared/REL --ray-address auto"))
    rel.add_argument("run", type=Path, help="run directory")
    rel.add_argument("--out", type=Path, required=True, help="release directory to create")
    rel.add_argument("--shard-rows", type=int, default=1000, help="rows per shard (default 1000)")
    rel.add_argument("--shard-bytes", type=int, default=None,
                     help="also cut a shard before its audio exceeds this many bytes (default: rows only)")
    rel.add_argument("--lang", type=common.lang_list, default=None, metavar="LANGS",
                     help="comma-separated languages to include, e.g. en,de (default: all)")
    rel.add_argument("--formats", type=common.format_list, default=list(DEFAULT_FORMATS), metavar="FORMATS",
                     help=f"{_formats_help()} (default {','.join(DEFAULT_FORMATS)}; each format holds its own "
                          "copy of the audio)")
    rel.add_argument("--release-license", default=None, metavar="SPDX",
                     help="release license: only rows whose license allows it go in (e.g. CC-BY-4.0 takes "
                          "CC0/PD/CC-BY rows, not CC-BY-SA); default: none, every kept row of the run goes "
                          "in")
    rel.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    rel.add_argument("--overwrite", action="store_true",
                     help="replace the release already in --out (only what a release wrote; anything else "
                          "there is refused, named)")
    rel.add_argument("--workers", type=int, default=1, metavar="N",
                     help="shards written at once: 1 (default) writes them in this process; N > 1 starts an "
                          "embedded local Ray with N CPUs (with --ray-address: N on the cluster; default there: "
                          "one per cluster CPU)")
    rel.add_argument("--ray-address", type=common.cluster_address, default=None, metavar="ADDRESS",
                     help=f"write the shards on this Ray cluster: {common.CLUSTER_HELP} (default: $RAY_ADDRESS, else "
                          "--workers decides); RUN and --out must be on a file system every node sees")
    common.add_json(rel, "rows, hours, files and bytes of the release")

    rep = common.command(sub, parents, "report", _cmd_report,
        examples=("granary report demo-run", "granary report demo-run --html report.html",
                  "granary report demo-release --json"))
    rep.add_argument("path", type=Path, help="run directory or release directory")
    common.add_json(rep, "the summary")
    rep.add_argument("--html", type=Path, default=None, metavar="PATH",
                     help="also write a self-contained HTML page with plots to PATH (no network requests)")

    dl = common.command(sub, parents, "download", _cmd_download,
        examples=("granary download https://example.org/corpus/release.json --out corpus --lang de",
                  "granary download /mnt/releases/v1 --out v1 --formats parquet --jobs 8"))
    dl.add_argument("source", help="release.json URL/path (or the release directory)")
    dl.add_argument("--out", type=Path, required=True, help="local directory to download into")
    _add_selection(dl, "all", "parallel downloads")
    dl.add_argument("--retries", type=int, default=5, help="retries per file on connection errors/5xx (default 5)")
    common.add_json(dl, "what was fetched, skipped and failed")

    vf = common.command(sub, parents, "verify", _cmd_verify,
        examples=("granary verify corpus", "granary verify corpus --lang de --formats wds --jobs 8 --json",
                  "granary verify demo-run --jobs 8"))
    vf.add_argument("dir", type=Path, help="release directory (holds release.json) or run directory (holds run.json)")
    _add_selection(vf, "what was downloaded", "files (release) or units (run) checked in parallel")
    common.add_json(vf, "ok, missing and bad files")

    src = common.command(sub, parents, "sources", _cmd_sources,
        examples=("granary sources", "granary sources --lang de,pl --json"))
    src.add_argument("--catalog", type=Path, default=None,
                     help="catalog directory (default: $GRANARY_CATALOG, else the bundled catalog)")
    src.add_argument("--lang", type=common.lang_list, default=None, metavar="LANGS",
                     help="only corpora with one of these languages, e.g. de,pl")
    common.add_json(src, "the rows")

    lic = common.command(sub, parents, "licenses", None, help="license tools (audit)",
                  description="License tools. `granary licenses audit PATH` checks a manifest, the catalog, "
                              "a run or a release.",
                  examples="granary licenses audit manifests/catalog")
    lic_sub = lic.add_subparsers(dest="licenses_command", required=True, metavar="COMMAND")
    au = common.command(lic_sub, parents, "audit", _cmd_licenses_audit,
        examples=("granary licenses audit manifests/demo/demo.yaml",
                  "granary licenses audit demo-release --release-license CC-BY-4.0 --json"))
    au.add_argument("path", type=Path, help="source manifest (.yaml), directory of manifests (e.g. manifests/catalog), "
                                            "run directory or release directory")
    au.add_argument("--release-license", default=None, metavar="SPDX",
                    help="check rows against this release license (default: a release's own, from its "
                         "release.json; none for a run, manifest or catalog: compliance only)")
    common.add_json(au, "the report")
