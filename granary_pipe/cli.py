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


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _cmd_release(args: argparse.Namespace) -> int:
    from granary_pipe.io.release import build_release

    rel = build_release(Path(args.run), Path(args.out), shard_rows=args.shard_rows, shard_bytes=args.shard_bytes,
                        langs=_csv(args.lang), seed=args.seed, progress=not args.quiet, overwrite=args.overwrite,
                        release_license=args.license, formats=args.formats)
    totals = rel["totals"]
    sizes = ", ".join(f"{fmt} {n / 1e6:.1f} MB" for fmt, n in totals["bytes"].items())
    print(f"release {args.out}: {totals['rows']} rows, {totals['hours']:.4f} h, {len(rel['shards'])} files ({sizes})")
    excluded = rel["excluded"]["by_license"]
    if excluded:
        print(f"left out, license not compatible with {rel['release_license']}: "
              + ", ".join(f"{lic} {n} rows" for lic, n in excluded.items()))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from granary_pipe.io.download import download_release

    report = download_release(args.source, Path(args.out), jobs=args.jobs, langs=_csv(args.lang),
                              formats=_csv(args.formats), retries=args.retries, progress=not args.quiet)
    print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return 0 if report.passed else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    from granary_pipe.io.verify import verify_release

    report = verify_release(Path(args.dir), langs=_csv(args.lang), formats=_csv(args.formats))
    for line in report.lines():
        print(line, file=sys.stderr)
    status = "ok" if report.passed else "FAILED"
    print(f"verify {args.dir}: {status}: {len(report.ok)} ok, {len(report.missing)} missing, {len(report.bad)} bad")
    return 0 if report.passed else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from granary_pipe.report.summary import format_summary, summarize

    summary = summarize(Path(args.path))
    print(json.dumps(summary, indent=2, sort_keys=True, default=str) if args.json else format_summary(summary))
    if args.html:
        from granary_pipe.report.html import write_html

        write_html(Path(args.path), args.html, summary=summary)
        print(f"HTML report: {args.html}", file=sys.stderr)
    return 0


def _cmd_sources(args: argparse.Namespace) -> int:
    from granary_pipe import catalog

    entries = catalog.load_catalog(args.catalog)
    if args.lang:
        entries = [e for e in entries if args.lang in e.info.languages]
    rows = catalog.sources_rows(entries)
    print(json.dumps(rows, indent=2) if args.json else catalog.format_sources(rows))
    return 0


def _cmd_licenses_audit(args: argparse.Namespace) -> int:
    from granary_pipe import audit

    report = audit.audit_path(args.path, release_license=args.release_license)
    print(audit.to_json(report) if args.json else audit.format_report(report))
    return report.exit_code


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


def _parse_sets(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs (VALUE parsed as YAML) → config overrides ``{"schedule.name": "linear"}``."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from granary_pipe.train.loop import resolve_config, train_from_args

    overrides = _parse_sets(args.set)
    if args.address or args.workers:
        from granary_pipe.train.distributed import train_with_ray

        cfg = resolve_config(args.out, args.config, overrides)
        summary = train_with_ray(args.data, args.out, cfg, num_workers=args.workers or 1,
                                 address=args.address, max_steps=args.max_steps)
    else:
        summary = train_from_args(args.data, args.out, args.config, max_steps=args.max_steps,
                                  overrides=overrides, progress=not args.quiet)
    if summary.get("rank", 0) != 0:  # torchrun: rank 0 reports
        return 0
    ev = summary.get("eval") or {}
    wer = f", held-out WER {ev['wer']:.3f} CER {ev['cer']:.3f}" if ev.get("wer") is not None else ""
    loss = f", loss {summary['loss']:.4f}" if summary.get("loss") is not None else ""
    print(f"train {args.out}: step {summary['step']}{loss}{wer}; checkpoint {summary['checkpoint']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from granary_pipe.train.loop import evaluate

    result = evaluate(args.checkpoint, args.data, split=args.split, max_utts=args.max_utts, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif result["utterances"] == 0:
        print(f"evaluate {result['checkpoint']}: no utterances in split {args.split} of {result['release']}")
        return 1
    else:
        print(f"evaluate {result['checkpoint']} (step {result['step']}) on {args.split} of {result['release']}: "
              f"{result['utterances']} utterances, WER {result['wer']:.4f}, CER {result['cer']:.4f}")
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from granary_pipe.train.loop import transcribe

    for item in transcribe(args.checkpoint, args.audio, device=args.device):
        print(json.dumps(item, ensure_ascii=False) if args.json else f"{item['audio']}\t{item['text']}")
    return 0


def _cmd_plot_schedules(args: argparse.Namespace) -> int:
    from granary_pipe.train.schedules import plot_schedules

    path = plot_schedules(args.out, peak_lr=args.peak_lr, warmup_steps=args.warmup_steps,
                          total_steps=args.total_steps, alpha=args.alpha, power=args.power)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``granary`` and its subcommands."""
    p = argparse.ArgumentParser(prog="granary", description=(
        "Curate open speech data: segment, identify language, transcribe, filter and license-check "
        "audio on Ray or Apache Beam, then cut releases (Parquet, WebDataset, NeMo, Lhotse Shar) and download them."))
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

    rel = sub.add_parser("release", help="cut a release (Parquet + WebDataset shards; NeMo, Lhotse Shar on request) from a run")
    rel.add_argument("run", type=Path, help="run directory")
    rel.add_argument("--out", type=Path, required=True, help="release directory to create")
    rel.add_argument("--shard-rows", type=int, default=1000, help="rows per shard (default 1000)")
    rel.add_argument("--shard-bytes", type=int, default=None,
                     help="also cut a shard before its audio exceeds this many bytes (default: rows only)")
    rel.add_argument("--lang", default=None, help="comma-separated languages to include (default: all)")
    rel.add_argument("--formats", default="parquet,wds",
                     help="comma-separated: parquet, wds, nemo, lhotse, or 'all' (default parquet,wds; "
                          "each format holds its own copy of the audio)")
    rel.add_argument("--license", default=None, metavar="SPDX",
                     help="release license: only rows whose license allows it go in (e.g. CC-BY-4.0 takes "
                          "CC0/PD/CC-BY rows, not CC-BY-SA); default: the run's release_license, if any")
    rel.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    rel.add_argument("--overwrite", action="store_true", help="replace an existing release directory")
    rel.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rel.set_defaults(func=_cmd_release)

    dl = sub.add_parser("download", help="download a release (release.json URL or path): verified, resumable",
                        description="Fetch every file release.json lists into OUT: parallel, resumable (HTTP Range), "
                                    "each checked by sha256 (a bad one is fetched once more), retried with backoff. "
                                    "SOURCE: http(s) URL, fsspec URL (file://, s3://, ...) or path, of release.json "
                                    "or its directory. Exit 1 if any file failed (listed).")
    dl.add_argument("source", help="release.json URL/path (or the release directory)")
    dl.add_argument("--out", type=Path, required=True, help="local directory to download into")
    dl.add_argument("--jobs", type=int, default=4, help="parallel downloads (default 4)")
    dl.add_argument("--lang", default=None, help="comma-separated languages (default: all)")
    dl.add_argument("--formats", default=None, help="comma-separated formats: parquet, wds, nemo, lhotse (default: all)")
    dl.add_argument("--retries", type=int, default=5, help="retries per file on connection errors/5xx (default 5)")
    dl.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(func=_cmd_download)

    vf = sub.add_parser("verify", help="check a downloaded release: sha256 and size of every listed file",
                        description="Check the files DIR/release.json lists (the selection of the download that "
                                    "made DIR, unless --lang/--formats say otherwise). Exit 1 listing missing/bad files.")
    vf.add_argument("dir", type=Path, help="release directory (holds release.json)")
    vf.add_argument("--lang", default=None, help="comma-separated languages (default: what was downloaded)")
    vf.add_argument("--formats", default=None, help="comma-separated formats (default: what was downloaded)")
    vf.set_defaults(func=_cmd_verify)

    src = sub.add_parser("sources", help="list the source catalog: corpus, languages, hours, license, compliant?, labelled",
                         description="List the open corpora of the source catalog (manifests/catalog/*.yaml): "
                                     "languages, published hours, license (registry id), whether it is open-source "
                                     "compliant, labelled or not, and how many facts were confirmed on the corpus's pages.")
    src.add_argument("--catalog", type=Path, default=None,
                     help="catalog directory (default: $GRANARY_CATALOG, else manifests/catalog)")
    src.add_argument("--lang", default=None, help="only corpora with this language (ISO 639-1 code)")
    src.add_argument("--json", action="store_true", help="print the rows as JSON")
    src.set_defaults(func=_cmd_sources)

    lic = sub.add_parser("licenses", help="license tools (audit)")
    lic_sub = lic.add_subparsers(dest="licenses_command", required=True)
    au = lic_sub.add_parser("audit", help="license compliance matrix of a manifest, catalog, run or release; "
                                          "exit 1 on any violation",
                            description="Print rows/hours per source and license (compliant?, BY/SA/NC/ND) and "
                                        "each model's license. Exit 1 when a kept or released row has a "
                                        "non-compliant, unknown or release-incompatible license, when a model's "
                                        "license forbids releasing its outputs, or when a manifest's license is "
                                        "not compliant or not recognised; 0 otherwise; 2 on errors.")
    au.add_argument("path", type=Path, help="source manifest (.yaml), directory of manifests (e.g. manifests/catalog), "
                                            "run directory or release directory")
    au.add_argument("--release-license", default=None, metavar="SPDX",
                    help="check rows against this release license (default: the run's or release's own)")
    au.add_argument("--json", action="store_true", help="print the report as JSON")
    au.set_defaults(func=_cmd_licenses_audit)

    rep = sub.add_parser("report", help="summarize a run or a release")
    rep.add_argument("path", type=Path, help="run directory or release directory")
    rep.add_argument("--json", action="store_true", help="print the summary as JSON")
    rep.add_argument("--html", type=Path, default=None, metavar="PATH",
                     help="also write a self-contained HTML page with plots to PATH (no network requests)")
    rep.set_defaults(func=_cmd_report)

    tr = sub.add_parser("train", help="train a Conformer-CTC model on a release (rerun = resume)",
                        description="Train on the WebDataset shards of a release. Rerunning with the same --out "
                                    "resumes from its latest checkpoint (the saved config is used when --config "
                                    "is not given). Without --address/--workers: one process (DDP when launched "
                                    "by torchrun); with them: Ray Train workers.")
    tr.add_argument("--data", required=True, help="release directory, or the URL of its release.json "
                    "(downloaded into OUT/data, verified)")
    tr.add_argument("--out", type=Path, required=True, help="training directory (checkpoints, metrics, TensorBoard)")
    tr.add_argument("--config", type=Path, default=None,
                    help="training YAML (default: the checkpoint's when resuming, else pipelines/train-base.yaml)")
    tr.add_argument("--max-steps", type=int, default=None, help="optimizer steps in total (overrides train.max_steps)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, repeatable, e.g. schedule.name=exponential data.loader_workers=4")
    tr.add_argument("--address", default=None,
                    help="Ray cluster address: train with Ray Train there (auto, ray://HEAD:10001)")
    tr.add_argument("--workers", type=int, default=None,
                    help="Ray Train workers (one GPU each when CUDA is available); without --address "
                         "an embedded local Ray")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="WER/CER of a checkpoint on a release split (greedy CTC)")
    ev.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or training directory (latest)")
    ev.add_argument("--data", default=None, help="release directory (default: the one the checkpoint trained on)")
    ev.add_argument("--split", choices=["heldout", "train", "all"], default="heldout",
                    help="rows to score; heldout = the checkpoint's held-out rows (default)")
    ev.add_argument("--max-utts", type=int, default=None, help="score at most this many utterances")
    ev.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    ev.add_argument("--json", action="store_true", help="print the result (with examples) as JSON")
    ev.set_defaults(func=_cmd_evaluate)

    ts = sub.add_parser("transcribe", help="transcribe audio files with a checkpoint (greedy CTC)")
    ts.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or training directory (latest)")
    ts.add_argument("audio", nargs="+", type=Path, help="audio files (any format FFmpeg reads)")
    ts.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    ts.add_argument("--json", action="store_true", help="one JSON object per file")
    ts.set_defaults(func=_cmd_transcribe)

    ps = sub.add_parser("plot-schedules", help="plot the four LR warmup schedules (linear, piecewise, exponential, "
                                               "polynomial) with inverse-sqrt decay")
    ps.add_argument("--out", type=Path, required=True, help="image path (.png, .pdf, .svg)")
    ps.add_argument("--peak-lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    ps.add_argument("--warmup-steps", type=int, default=1000, help="warmup updates w (default 1000)")
    ps.add_argument("--total-steps", type=int, default=None, help="updates plotted (default 5w)")
    ps.add_argument("--alpha", type=float, default=1.5, help="exponential warmup rate (default 1.5)")
    ps.add_argument("--power", type=float, default=1.5, help="polynomial warmup exponent (default 1.5)")
    ps.set_defaults(func=_cmd_plot_schedules)
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
