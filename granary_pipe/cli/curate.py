"""``granary run``, ``submit``, ``status``, ``logs`` and ``stages``: curating audio into a run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from granary_pipe.cli import common


def _cmd_run(args: argparse.Namespace) -> int:
    """run a pipeline over a source into a run directory (rerun = resume)

    Run PIPELINE over the recordings of SOURCE into OUT. Units already committed in OUT are skipped,
    so rerunning the same command resumes; a run of another pipeline or source (or a listing whose
    lines changed) is refused. Without --ray-address an embedded local Ray starts. Progress goes to
    stderr: a bar on a terminal, one line per committed unit elsewhere (a log file, CI, a Ray job).
    """
    from granary_pipe import bundled
    from granary_pipe.config import ConfigError
    from granary_pipe.executors import ExecutorOptions, check_executor

    pipeline = bundled.pipeline_path(args.pipeline)
    source = bundled.source_path(args.source) if args.source is not None else bundled.default_source(pipeline)
    if source is None:
        raise ConfigError(f"--source is required for {args.pipeline} (a source manifest YAML, or 'demo' for the "
                          "bundled demo corpus)")
    check_executor(args.executor, ExecutorOptions(address=args.ray_address, num_cpus=args.num_cpus,
                                                  beam_options=args.beam_option))  # a user error stays one line
    if not common.quiet(args):  # a first line now: listing, Ray's start and loading the models take up to a minute
        print(f"granary run: {args.pipeline} into {args.out}: listing the source, then {_engine(args)} ...",
              file=sys.stderr, flush=True)
    from granary_pipe.pipeline import run_pipeline
    from granary_pipe.report.summary import summarize
    from granary_pipe.report.text import format_summary

    try:
        info = run_pipeline(pipeline, source, args.out, address=args.ray_address, progress=not common.quiet(args),
                            num_cpus=args.num_cpus, executor=args.executor, beam_options=args.beam_option)
    except KeyboardInterrupt:
        print(f"\ngranary run: interrupted: committed units are kept; rerun the same command to resume "
              f"({args.out})", file=sys.stderr)
        return 130
    failed = info.get("failed_units") or []
    if args.json:
        common.print_json({"run": str(args.out), "status": info["status"], "failed_units": failed,
                    "summary": summarize(Path(args.out))})
    elif not common.quiet(args):
        print(format_summary(summarize(Path(args.out))))
    if failed:
        print(f"{len(failed)} unit(s) failed: {', '.join(failed)} (see {args.out}/run.json)", file=sys.stderr)
        return common.EXIT_CHECK_FAILED
    return common.EXIT_OK


def _engine(args: argparse.Namespace) -> str:
    """What ``granary run`` is about to start, in words, for its first line."""
    if args.executor != "ray":
        return f"starting the {args.executor} executor"
    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        return f"connecting to Ray at {address}"
    return f"starting Ray (embedded, {args.num_cpus or os.cpu_count()} CPUs; the stages' models load after it)"


def _cmd_submit(args: argparse.Namespace) -> int:
    """submit `granary run` as a job to a Ray cluster (Ray Jobs API)

    Submit a run to a Ray cluster through its dashboard's Jobs API. PIPELINE and --source are
    relative to --working-dir, which is uploaded with the job; --out must be on storage every node
    sees. With --wait the job's log (one progress line per committed unit) streams here until it
    ends. Token auth: set RAY_AUTH_TOKEN (or have ~/.ray/auth_token).
    """
    from granary_pipe.executors import ray_jobs

    dashboard = common.dashboard_from(args)
    extra = ["--executor", args.executor] if args.executor != "ray" else []
    job = ray_jobs.submit(args.pipeline, args.source, args.out, address=dashboard, working_dir=args.working_dir,
                          upload_package=not args.no_upload, job_id=args.job_id, extra_args=extra)
    if args.json and not args.wait:
        common.print_json({"job_id": job, "dashboard": dashboard})
    elif not args.json:
        print(job, flush=True)
    if not args.wait:
        return common.EXIT_OK
    print(f"job {job} submitted to {dashboard}; following its log", file=sys.stderr, flush=True)
    ray_jobs.logs(job, dashboard, follow=True, out=sys.stderr if args.json else sys.stdout)
    state = ray_jobs.wait(job, dashboard)
    if args.json:
        common.print_json({"job_id": job, "dashboard": dashboard, "status": state})
    print(f"job {job}: {state}", file=sys.stderr)
    return common.EXIT_OK if state == "SUCCEEDED" else common.EXIT_CHECK_FAILED


def _cmd_status(args: argparse.Namespace) -> int:
    """status of a submitted job

    Print a submitted job's state (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED).
    """
    from granary_pipe.executors import ray_jobs

    info = ray_jobs.status(args.job, common.dashboard_from(args))
    if args.json:
        common.print_json(info)
    else:
        print(f"{info['job_id']}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))
    return common.EXIT_OK


def _cmd_logs(args: argparse.Namespace) -> int:
    """driver log of a submitted job

    Print a submitted job's driver log: the run's progress lines and summary.
    """
    from granary_pipe.executors import ray_jobs

    text = ray_jobs.logs(args.job, common.dashboard_from(args), follow=args.follow)
    if text is not None:
        print(text, end="")
    return common.EXIT_OK


def _cmd_stages(args: argparse.Namespace) -> int:
    """list the pipeline stages with their parameters (--json: JSON Schema of pipeline files)

    Every registered stage (the `use:` names of a pipeline file) with its parameters: type, default
    and description, and the engine settings each stage takes beside `params` (resources,
    batch_size, workers). --json prints the JSON Schema of a pipeline file, for editors that
    validate YAML (e.g. `# yaml-language-server: $schema=pipeline.schema.json`).
    """
    from granary_pipe import stage_docs

    if args.json:
        common.print_json(stage_docs.pipeline_schema())
        return common.EXIT_OK
    print(stage_docs.format_stages(stage_docs.stage_reference(args.names or None)))
    return common.EXIT_OK


RUN_EXAMPLES = (
    "granary run demo --out demo-run                 # the bundled demo corpus",
    "granary run pipelines/demo.yaml --source manifests/demo/demo.yaml --out RUN",
    "granary run my.yaml --source corpus.yaml --out /data/RUN --ray-address auto",
    "granary run demo --out RUN --executor beam --beam-option direct_num_workers=2",
)


def add_parsers(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Register the curation commands."""
    from granary_pipe.executors import EXECUTORS

    r = common.command(sub, parents, "run", _cmd_run, examples=RUN_EXAMPLES)
    r.add_argument("pipeline", help="pipeline YAML, or a bundled pipeline name: demo, granary-gpu, granary-gpu-1 "
                                    "(see granary stages for what each stage takes)")
    r.add_argument("--source", default=None,
                   help="source manifest YAML, or 'demo' (the bundled demo corpus; the default for the demo pipeline)")
    r.add_argument("--out", type=Path, required=True, help="run directory to create or resume")
    r.add_argument("--executor", choices=EXECUTORS, default="ray",
                   help="engine: ray (default; embedded local Ray or --ray-address) or beam (Apache Beam, extra "
                        "[beam]; DirectRunner unless --beam-option runner=... says otherwise); same output")
    r.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                   help="Beam pipeline option, repeatable, e.g. runner=FlinkRunner, flink_master=HOST:8081, "
                        "direct_num_workers=2 (--executor beam only)")
    r.add_argument("--ray-address", type=common.cluster_address, default=None, metavar="ADDRESS",
                   help=f"Ray cluster to run on: {common.CLUSTER_HELP} (default: $RAY_ADDRESS, else an embedded "
                        "local Ray)")
    r.add_argument("--num-cpus", type=int, default=None, help="CPUs for the embedded local Ray (default: all)")
    common.add_json(r, "the run's status and summary")

    sm = common.command(sub, parents, "submit", _cmd_submit,
        examples=("granary submit pipelines/demo.yaml --source manifests/demo/demo.yaml \\",
                  "    --out /data/runs/demo --dashboard http://HEAD:8265 --wait",
                  "granary status JOB_ID --dashboard http://HEAD:8265"))
    sm.add_argument("pipeline", help="pipeline YAML relative to --working-dir, or a bundled pipeline name")
    sm.add_argument("--source", required=True, help="source manifest relative to --working-dir, or 'demo'")
    sm.add_argument("--out", required=True, help="run directory on shared storage (absolute path)")
    sm.add_argument("--executor", choices=EXECUTORS, default="ray", help="engine of the job's run (default ray)")
    _add_dashboard(sm)
    sm.add_argument("--working-dir", type=Path, default=None, help="directory uploaded with the job (default: .)")
    sm.add_argument("--no-upload", action="store_true", help="the cluster image already has granary_pipe")
    sm.add_argument("--job-id", default=None, help="submission id to use (default: Ray picks one)")
    sm.add_argument("--wait", action="store_true",
                    help="follow the job's log until it ends; exit 1 unless it succeeded")
    common.add_json(sm, "the job id (and with --wait its final status)")

    st = common.command(sub, parents, "status", _cmd_status,
        examples="granary status raysubmit_XYZ --dashboard http://HEAD:8265 --json")
    _add_job(st)
    common.add_json(st, "all job info")
    lg = common.command(sub, parents, "logs", _cmd_logs,
        examples="granary logs raysubmit_XYZ --dashboard http://HEAD:8265 -f")
    _add_job(lg)
    lg.add_argument("-f", "--follow", action="store_true", help="stream the log until the job ends")

    sg = common.command(sub, parents, "stages", _cmd_stages,
        examples=("granary stages", "granary stages asr.two_pass filter.hallucination",
                  "granary stages --json > pipeline.schema.json"))
    sg.add_argument("names", nargs="*", help="only these stages (default: all)")
    common.add_json(sg, "the JSON Schema of pipeline files")


def _add_job(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="submission id printed by granary submit")
    _add_dashboard(parser)


def _add_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dashboard", type=common.dashboard_url, default=None, metavar="URL",
                        help=f"Ray dashboard (Jobs API), e.g. {common.DASHBOARD_HELP} (default: $RAY_JOB_ADDRESS, "
                             "$RAY_ADDRESS when it is a URL, then http://127.0.0.1:8265)")
