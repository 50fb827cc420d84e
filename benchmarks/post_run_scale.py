"""After the run, at size (issue 19, item 3): report, audit, release, verify and download of a
committed run of N units, each command as a user runs it (a subprocess), with its time per unit
and per row and its peak memory; ratios against the smallest N of the same invocation.

    PYTHONPATH=. python benchmarks/post_run_scale.py --units 1000,10000,100000 --audio-s 0.5 --variants 64

The run of N units is made by ``replicate_run.py`` from the committed units of a real run
(``--from RUN``; default: ``granary run demo`` made once into ``WORK/demo-run``): unique row ids,
real Parquet rows, the source's FLACs hard-linked (so the run itself costs little disk). A release
compresses across rows (Parquet shards are zstd), so hard-linked copies of one FLAC shrink to
almost nothing in a Parquet release: ``--variants K`` links K distinct FLACs per source file (its
samples with the first 7 k cut off; copy c uses variant c mod K), made once in the work directory.

Disk: the demo's units hold about 5.75 kept rows each, about 140 KB of FLAC per row (8 s of
speech). Each release format writes its own copy of the kept audio, so one release of N units
needs about N x 0.8 MB at full audio (1 k units: 0.8 GB; 10 k: 8 GB; 100 k: 80 GB), and about
N x 5.75 x (1 + 17.5 x S) KB with ``--audio-s S`` (100 k units at S = 0.5: about 5.6 GB). At most
three releases exist at once (the first format's, which verify and download use, one more
format's, and the download), each removed when measured unless ``--keep``.

Measured per size, each a fresh process: ``granary report RUN --json`` (and a check that it
balances), ``granary licenses audit RUN``, ``granary release RUN --formats F`` for each of
``--formats`` (the default ``--workers 1``), the first format again with ``--workers 2`` (when
``release --help`` has ``--workers``; MB/s, rows/s and the ratio of the two), ``granary verify
REL``, ``granary download`` of REL from a local ``http.server``, and ``granary verify RUN`` (when the CLI takes a run directory).
Rows per command: kept + rejected for report, audit and verify RUN; released rows for the rest.
Memory: "peak RSS" is the largest single process of the command's tree, "tree RSS" the peak of
the tree's summed RSS, sampled (Ray's workers included); see ``bench_cli.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cli import (  # noqa: E402
    CODE, MB, Measured, add_checkout_option, dir_bytes, granary, help_text, http_server, print_table, use_checkout,
)
from replicate_run import replicate  # noqa: E402

FORMATS = "parquet,wds,nemo,lhotse_shar"


def demo_run(work: Path) -> Path:
    """``granary run demo --out WORK/demo-run``, made once."""
    run = work / "demo-run"
    info = run / "run.json"
    if not (info.is_file() and json.loads(info.read_text()).get("status") == "complete"):
        print(f"making the source run: granary run demo --out {run}", file=sys.stderr, flush=True)
        granary("run", "demo", "--out", str(run), "-q")
    return run


def build(args: argparse.Namespace, source: Path, n: int) -> tuple[Path, float]:
    """The run of ``n`` units (reused with --keep when its stamp matches); (path, build seconds)."""
    tag = f"run-{n}" + (f"-r{args.rows_per_unit}" if args.rows_per_unit else "") + \
          (f"-a{args.audio_s:g}" if args.audio_s else "") + (f"-v{args.variants}" if args.variants > 1 else "")
    run, stamp = args.work / tag, args.work / f"{tag}.json"
    want = {"from": str(source.resolve()), "units": n, "rows_per_unit": args.rows_per_unit, "audio_s": args.audio_s,
            "variants": args.variants}
    if args.keep and stamp.is_file() and (run / "run.json").is_file():
        got = json.loads(stamp.read_text())
        if {k: got.get(k) for k in want} == want:
            return run, got.get("build_s", 0.0)
    stamp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    replicate(source, run, n, rows_per_unit=args.rows_per_unit, audio_s=args.audio_s,
              variants=args.variants, audio_dir=args.work / f"audio-{args.audio_s or 'all'}-{args.variants}",
              jobs=args.jobs)
    secs = time.perf_counter() - t0
    stamp.write_text(json.dumps({**want, "build_s": round(secs, 2)}))
    return run, secs


def release(run: Path, out: Path, fmt: str, args: argparse.Namespace, *extra: str) -> tuple[Measured, int, int]:
    """``granary release RUN --out OUT --formats FMT``; (figures, rows, bytes written)."""
    shutil.rmtree(out, ignore_errors=True)
    m = granary("release", str(run), "--out", str(out), "--formats", fmt, "--shard-rows", str(args.shard_rows),
                "--json", "-q", *extra)
    rel = json.loads(m.stdout)
    return m, rel["rows"], dir_bytes(out)


def measure_size(args: argparse.Namespace, source: Path, n: int, notes: list[str]) -> dict:
    """Every command on the run of ``n`` units; {command: row of figures}."""
    run, build_s = build(args, source, n)
    out: dict[str, dict] = {}
    report = granary("report", str(run), "--json")
    summary = json.loads(report.stdout)
    rows = summary["rows"]
    if not rows["balanced"] or rows["in"] != rows["kept"] + rows["rejected"]:
        raise SystemExit(f"{run}: the report does not balance: {rows}")
    all_rows, kept_rows = rows["in"], rows["kept"]
    out["report --json"] = fig(report, n, all_rows)
    audit = granary("licenses", "audit", str(run), check=False)
    if audit.rc not in (0, 1):  # 1: a violation found, still a complete audit
        raise SystemExit(f"granary licenses audit {run} failed (exit {audit.rc}):\n{audit.stderr[-2000:]}")
    out["licenses audit"] = fig(audit, n, all_rows)
    formats = [f for f in args.formats.split(",") if f]
    first = args.work / f"rel-{n}-{formats[0]}"
    for fmt in formats:
        rel = args.work / f"rel-{n}-{fmt}"
        m, rrows, nbytes = release(run, rel, fmt, args)
        out[f"release {fmt}"] = fig(m, n, rrows, nbytes)
        if rel != first and not args.keep:
            shutil.rmtree(rel)
    if "--workers" in help_text("release"):
        tmp = args.work / f"rel-{n}-workers"
        got = {1: out[f"release {formats[0]}"]}  # that release ran with the default, --workers 1
        m, rrows, nbytes = release(run, tmp, formats[0], args, "--workers", "2")
        got[2] = out[f"release {formats[0]} --workers 2"] = fig(m, n, rrows, nbytes)
        shutil.rmtree(tmp, ignore_errors=True)
        out[f"release {formats[0]} --workers 2"]["speedup"] = got[1]["wall_s"] / got[2]["wall_s"]
    elif n == args.sizes[0]:
        notes.append("`granary release --help` has no --workers: the 1- and 2-worker release was not measured")
    released = out[f"release {formats[0]}"]
    out["verify REL"] = fig(granary("verify", str(first), "-q"), n, released["rows"], released["bytes"])
    dl = args.work / f"download-{n}"
    shutil.rmtree(dl, ignore_errors=True)
    with http_server(first) as url:
        m = granary("download", f"{url}/release.json", "--out", str(dl), "-q")
    out["download (HTTP)"] = fig(m, n, released["rows"], dir_bytes(dl))
    shutil.rmtree(dl)
    vr = granary("verify", str(run), "-q", check=False)
    first_line = (vr.stderr.strip().splitlines() or ["?"])[0]
    if vr.rc in (0, 1) and "not a release directory" not in vr.stderr:  # 1: it checked and found bad files
        out["verify RUN"] = fig(vr, n, all_rows)
        if vr.rc:
            notes.append(f"`granary verify` of the {n}-unit run found problems: {first_line}")
    elif n == args.sizes[0]:
        notes.append(f"`granary verify RUN` not measured: this CLI refuses a run directory ({first_line})")
    if not args.keep:
        shutil.rmtree(first)
    return {"units": n, "rows": all_rows, "kept": kept_rows, "build_s": build_s, "commands": out}


def fig(m: Measured, units: int, rows: int, nbytes: int | None = None) -> dict:
    """A command's row: seconds, per unit and per row, memory, throughput."""
    return {"wall_s": m.wall_s, "ms_per_unit": 1000 * m.wall_s / units, "us_per_row": 1e6 * m.wall_s / max(rows, 1),
            "cpu_ms_per_unit": 1000 * m.cpu_s / units,
            "peak_rss_mb": m.peak_rss_mb, "tree_rss_mb": m.tree_rss_mb, "rows": rows, "bytes": nbytes,
            "mb_s": None if nbytes is None else nbytes / MB / m.wall_s, "rows_s": rows / m.wall_s}


def print_results(results: list[dict], startup: Measured) -> None:
    """One table per size, then the ratios against the smallest."""
    for r in results:
        rows = [[cmd, c["wall_s"], c["ms_per_unit"], c.get("cpu_ms_per_unit"), c["us_per_row"], c["peak_rss_mb"],
                 c["tree_rss_mb"], c["mb_s"], c["rows_s"], c.get("speedup")] for cmd, c in r["commands"].items()]
        print_table(f"{r['units']} units ({r['rows']} rows, {r['kept']} kept; built in {r['build_s']:.1f} s)",
                    ["command", "s", "ms/unit", "CPU ms/unit", "µs/row", "peak RSS MB", "tree RSS MB", "MB/s",
                     "rows/s", "2 ÷ 1 worker"], rows)
    base = results[0]
    for r in results[1:]:
        rows = []
        for cmd, c in r["commands"].items():
            b = base["commands"].get(cmd)
            if b:
                cpu = c.get("cpu_ms_per_unit", 0) / b["cpu_ms_per_unit"] if b.get("cpu_ms_per_unit") else None
                rows.append([cmd, c["ms_per_unit"] / b["ms_per_unit"], cpu, c["us_per_row"] / b["us_per_row"],
                             c["peak_rss_mb"] / b["peak_rss_mb"], c["tree_rss_mb"] / max(b["tree_rss_mb"], 1e-9)])
        print_table(f"ratios, {r['units']} units ÷ {base['units']} units",
                    ["command", "time/unit", "CPU/unit", "time/row", "peak RSS", "tree RSS"], rows)
    print(f"\nCLI start-up (`granary --help`): {startup.wall_s:.2f} s, {startup.peak_rss_mb:.0f} MB; "
          "included in every figure above")


def main(argv: list[str] | None = None) -> int:
    """Build each size, measure every command, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="1000,10000,100000", help="comma-separated N (default 1000,10000,100000)")
    ap.add_argument("--from", dest="source", type=Path, default=None,
                    help="committed run to replicate (default: granary run demo, made once into WORK/demo-run)")
    ap.add_argument("--rows-per-unit", type=int, default=None,
                    help="rows per unit: the first R of the source unit's, or repeated up to R (default: as is)")
    ap.add_argument("--audio-s", type=float, default=None,
                    help="replace each row's audio by its first S seconds (made once per source file) so the "
                         "releases fit on disk; see the disk note above")
    ap.add_argument("--variants", type=int, default=1,
                    help="distinct FLACs per source file (copy c of a unit links variant c mod K; default 1: the "
                         "source's own files). A release compresses across rows (Parquet: zstd), so copies of one "
                         "file shrink to almost nothing; K > 1 makes shards K times more distinct")
    ap.add_argument("--formats", default=FORMATS, help=f"release formats, each measured alone (default {FORMATS}); "
                                                       "the first is used for --workers, verify and download")
    ap.add_argument("--shard-rows", type=int, default=1000, help="release --shard-rows (default 1000)")
    ap.add_argument("--jobs", type=int, default=2, help="processes that build a run (default 2)")
    ap.add_argument("--keep", action="store_true", help="reuse built runs (same parameters) and keep the releases")
    ap.add_argument("--work", type=Path, default=Path("/tmp/post-run-scale"), help="work directory "
                                                                                   "(default /tmp/post-run-scale)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    add_checkout_option(ap)
    args = ap.parse_args(argv)
    use_checkout(args.checkout)
    args.sizes = sorted(int(s) for s in args.units.split(",") if s.strip())
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.source or demo_run(args.work)
    startup = granary("--help")
    results, notes = [], []
    for n in args.sizes:
        results.append(measure_size(args, source, n, notes))
        print(f"measured {n} units", file=sys.stderr, flush=True)
    audio = f"{args.audio_s:g} s per row" if args.audio_s else "as the source"
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; source {source}; rows per unit "
          f"{args.rows_per_unit or 'as the source'}; audio {audio}, {args.variants} variant(s) per source file; "
          f"code {CODE['checkout']}")
    print_results(results, startup)
    for note in notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "notes": notes}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
