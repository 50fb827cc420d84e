"""The ``granary`` command line. It parses arguments and calls library functions; no logic here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from granary_pipe import __version__


def _cmd_run(args: argparse.Namespace) -> int:
    from granary_pipe.pipeline import run_pipeline
    from granary_pipe.report.summary import format_summary, summarize

    try:
        info = run_pipeline(args.pipeline, args.source, args.out, address=args.address,
                            progress=not args.quiet, num_cpus=args.num_cpus, executor=args.executor,
                            beam_options=args.beam_option)
    except KeyboardInterrupt:
        print(f"\ninterrupted: committed units are kept; rerun the same command to resume ({args.out})",
              file=sys.stderr)
        return 130
    if not args.quiet:
        print(format_summary(summarize(Path(args.out))))
    failed = info.get("failed_units") or []
    if failed:
        print(f"{len(failed)} unit(s) failed: {', '.join(failed)} (see {args.out}/run.json)", file=sys.stderr)
        return 1
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from granary_pipe.io.release import build_release

    langs = args.lang.split(",") if args.lang else None
    rel = build_release(Path(args.run), Path(args.out), shard_rows=args.shard_rows, langs=langs,
                        seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
    totals = rel["totals"]
    print(f"release {args.out}: {totals['rows']} rows, {totals['hours']:.4f} h, {len(rel['shards'])} shards")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from granary_pipe.report.summary import format_summary, summarize

    summary = summarize(Path(args.path))
    print(json.dumps(summary, indent=2, sort_keys=True, default=str) if args.json else format_summary(summary))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from granary_pipe.executors import ray_jobs

    job = ray_jobs.submit(args.pipeline, args.source, args.out, address=args.address, working_dir=args.working_dir,
                          upload_package=not args.no_upload, job_id=args.job_id)
    print(job)
    if args.wait:
        ray_jobs.logs(job, args.address, follow=True)
        state = ray_jobs.wait(job, args.address)
        print(f"job {job}: {state}", file=sys.stderr)
        return 0 if state == "SUCCEEDED" else 1
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from granary_pipe.executors import ray_jobs

    info = ray_jobs.status(args.job, args.address)
    print(json.dumps(info, indent=2, default=str) if args.json else f"{info['job_id']}: {info['status']}"
          + (f" ({info['message']})" if info["message"] else ""))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from granary_pipe.executors import ray_jobs

    text = ray_jobs.logs(args.job, args.address, follow=args.follow)
    if text is not None:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``granary`` and its subcommands."""
    p = argparse.ArgumentParser(prog="granary", description=(
        "Curate open speech data: segment, identify language, transcribe, filter and license-check "
        "audio on Ray or Apache Beam, then cut releases of Parquet + WebDataset shards."))
    p.add_argument("--version", action="version", version=f"granary_pipe {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a pipeline over a source manifest into a run directory (resumable)",
                       description="Run PIPELINE over the recordings of SOURCE. Units already committed "
                                   "in OUT are skipped, so rerunning the same command resumes.")
    r.add_argument("pipeline", type=Path, help="pipeline YAML, e.g. pipelines/demo.yaml")
    r.add_argument("--source", type=Path, required=True, help="source manifest YAML, e.g. manifests/demo/demo.yaml")
    r.add_argument("--out", type=Path, required=True, help="run directory to create or resume")
    r.add_argument("--executor", choices=["ray", "beam"], default="ray",
                   help="engine: ray (default; embedded local Ray or --address) or beam (Apache Beam; "
                        "DirectRunner unless --beam-option runner=... says otherwise); same output")
    r.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                   help="Beam pipeline option, repeatable, e.g. runner=FlinkRunner, flink_master=HOST:8081, "
                        "direct_num_workers=2, direct_running_mode=multi_threading (--executor beam only)")
    r.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)")
    r.add_argument("--num-cpus", type=int, default=None, help="CPUs for the embedded local Ray (default: all)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    r.set_defaults(func=_cmd_run)

    sm = sub.add_parser("submit", help="submit `granary run` as a job to a Ray cluster (Ray Jobs API)",
                        description="Submit a run to a Ray cluster. PIPELINE and --source are relative to "
                                    "--working-dir, which is uploaded with the job; --out must be on storage every "
                                    "node sees. Token auth: set RAY_AUTH_TOKEN (or have ~/.ray/auth_token).")
    sm.add_argument("pipeline", help="pipeline YAML, relative to --working-dir")
    sm.add_argument("--source", required=True, help="source manifest, relative to --working-dir")
    sm.add_argument("--out", required=True, help="run directory on shared storage (absolute path)")
    sm.add_argument("--address", default=None, help="Ray dashboard address, e.g. http://HEAD:8265 "
                    "(default: $RAY_JOB_ADDRESS, $RAY_ADDRESS, then http://127.0.0.1:8265)")
    sm.add_argument("--working-dir", type=Path, default=None, help="directory uploaded with the job (default: .)")
    sm.add_argument("--no-upload", action="store_true", help="the cluster image already has granary_pipe")
    sm.add_argument("--job-id", default=None, help="submission id to use (default: Ray picks one)")
    sm.add_argument("--wait", action="store_true", help="follow the job's log until it ends; exit 1 unless it succeeded")
    sm.set_defaults(func=_cmd_submit)

    st = sub.add_parser("status", help="status of a submitted job")
    st.add_argument("job", help="submission id printed by `granary submit`")
    st.add_argument("--address", default=None, help="Ray dashboard address (as for submit)")
    st.add_argument("--json", action="store_true", help="print all job info as JSON")
    st.set_defaults(func=_cmd_status)

    lg = sub.add_parser("logs", help="driver log of a submitted job")
    lg.add_argument("job", help="submission id printed by `granary submit`")
    lg.add_argument("--address", default=None, help="Ray dashboard address (as for submit)")
    lg.add_argument("-f", "--follow", action="store_true", help="stream the log until the job ends")
    lg.set_defaults(func=_cmd_logs)

    rel = sub.add_parser("release", help="cut a release (Parquet + WebDataset shards, release.json) from a run")
    rel.add_argument("run", type=Path, help="run directory")
    rel.add_argument("--out", type=Path, required=True, help="release directory to create")
    rel.add_argument("--shard-rows", type=int, default=1000, help="rows per shard (default 1000)")
    rel.add_argument("--lang", default=None, help="comma-separated languages to include (default: all)")
    rel.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    rel.add_argument("--overwrite", action="store_true", help="replace an existing release directory")
    rel.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rel.set_defaults(func=_cmd_release)

    rep = sub.add_parser("report", help="summarize a run or a release")
    rep.add_argument("path", type=Path, help="run directory or release directory")
    rep.add_argument("--json", action="store_true", help="print the summary as JSON")
    rep.set_defaults(func=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``granary`` console script."""
    from granary_pipe.config import ConfigError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"granary {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
