"""Build a release from a run directory (``granary release RUN --out OUT``): plan, gather, write the shards,
then the top files, published by renames; resumable, byte-identical for the same run and arguments.
Design: docs/architecture.md, "After the run" (Release).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from granary_pipe import __version__, licenses
from granary_pipe.audit_models import check_release_models
from granary_pipe.io import release_out
from granary_pipe.io.formats import DEFAULT_FORMATS, FORMATS, resolve_formats
from granary_pipe.io.release_docs import attribution_md, dataset_card_md
from granary_pipe.io.release_gather import forget_gathered, gather, read_gathered, shard_sources
from granary_pipe.io.release_meta import FORMAT_VERSION, Written, file_entry, release_metadata
from granary_pipe.io.release_plan import Plan, plan_release
from granary_pipe.io.release_tasks import ShardJob, TaskRunner, merge_records, read_done, write_shard
from granary_pipe.io.verify import RELEASE_JSON
from granary_pipe.rundir import read_run_json, write_file, write_json_atomic

log = logging.getLogger(__name__)
_STATE = "state.json"


def release_license_of(release_license: str | None) -> str | None:
    """The release license (``--release-license``) as a registry id, None when not given.
    ``ValueError`` for one that is unknown or not open-source compliant."""
    if release_license is None:
        return None
    spdx = licenses.normalize(release_license)
    if licenses.get(spdx) is None:  # unknown, a verdict, an SPDX id without an entry, an expression
        raise ValueError(f"release license {release_license!r} is not in the license registry "
                         "(give one registry id, e.g. CC-BY-4.0; not an expression)")
    if not licenses.allows_release(spdx):
        raise ValueError(f"release license {spdx} is not open-source compliant "
                         "(non-commercial / no-derivatives): choose an open license")
    return spdx


def work_dir_name(run_dir: Path, run: dict[str, Any], args: dict[str, Any]) -> str:
    """``.tmp-release-KEY``, KEY from the run's path and fingerprint, the arguments and the format version:
    a rerun of the same release finds its work."""
    key = {"run": str(Path(run_dir).resolve()), "fingerprint": run.get("fingerprint"), "args": args,
           "format_version": FORMAT_VERSION, "granary_pipe": __version__}
    return release_out.WORK_PREFIX + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _plan(run_dir: Path, work: Path, args: dict[str, Any]) -> Plan:
    """Plan in ``work``; when the plan differs from the one the done-records belong to (the run changed),
    forget them and the shards they describe."""
    plan = plan_release(run_dir, work, langs=args["langs"], release_license=args["release_license"],
                        seed=args["seed"], shard_rows=args["shard_rows"], shard_bytes=args["shard_bytes"])
    state = work / _STATE
    try:
        previous = json.loads(state.read_text(encoding="utf-8")).get("plan")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != plan.digest:
        for entry in work.iterdir():
            if entry.name in (*FORMATS, "done", *release_out.TOP_FILES, RELEASE_JSON):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        forget_gathered(work)
        write_json_atomic(state, {"plan": plan.digest, "shards": len(plan.shards)})
    return plan


def _write_top_files(root: Path, release: dict[str, Any], run: dict[str, Any], written: Written) -> None:
    """ATTRIBUTION.md, README.md (listed in ``release["files"]``) and release.json under ``root``, fsynced."""
    write_file(root / "ATTRIBUTION.md", attribution_md(
        release["created_from"], release["release_license"], release["sources"], written.by_source,
        run.get("models")).encode("utf-8"))
    write_file(root / "README.md", dataset_card_md(release).encode("utf-8"))
    for name in release_out.TOP_FILES:
        entry = file_entry(root, name, "meta", None, 0, 0.0)
        release["files"].append({k: entry[k] for k in ("path", "format", "sha256", "bytes")})
    write_file(root / RELEASE_JSON, (json.dumps(release, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def build_release(run_dir: Path, out_dir: Path, *, shard_rows: int = 1000, shard_bytes: int | None = None,
                  langs: list[str] | None = None, seed: int = 0, progress: bool = True, overwrite: bool = False,
                  release_license: str | None = None, formats: Iterable[str] | str | None = DEFAULT_FORMATS,
                  workers: int = 1, ray_address: str | None = None) -> dict[str, Any]:
    """Write a release of ``run_dir``'s kept rows into ``out_dir`` (absent or empty but for an interrupted
    release's work, unless ``overwrite``: that replaces only what an earlier release wrote); return release.json's
    dict. ``shard_bytes``: also cut a shard before its FLAC bytes pass this; ``langs``/``release_license`` None:
    no filter; ``workers`` N > 1: on an embedded Ray with N CPUs; ``ray_address`` (default ``$RAY_ADDRESS``):
    on that cluster, with ``run_dir`` and ``out_dir`` on a file system every node sees. Raises
    ``FileNotFoundError`` (no run.json, a kept row's audio missing), ``ValueError`` (no committed unit or kept
    rows, an unknown release license or format, bad arguments, a model whose license forbids a release),
    ``FileExistsError`` (what no release wrote is in ``out_dir``, or a release without ``overwrite``),
    :class:`~granary_pipe.io.run_lock.RunLocked`, ``ConnectionError`` (no Ray at ``ray_address``).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = read_run_json(run_dir)
    formats = resolve_formats(formats)
    _check_sizes(shard_rows, shard_bytes, workers)
    ray_address = ray_address or os.environ.get("RAY_ADDRESS") or None
    if ray_address:
        from granary_pipe.executors.ray_address import check_reachable

        check_reachable(ray_address)  # before anything is written: Ray retries an unreachable one for minutes
    release_license = release_license_of(release_license)
    check_release_models(run_dir, run)  # a model whose license is unknown or forbids release: refused
    args = {"formats": list(formats), "shard_rows": shard_rows, "shard_bytes": shard_bytes, "seed": seed,
            "langs": sorted(langs) if langs is not None else None, "release_license": release_license}
    release_out.refuse_run_dir(run_dir, out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"release output is not a directory: {out_dir}")
    with release_out.claimed(out_dir):  # another release writing here: refused before anything is touched
        work = out_dir / work_dir_name(run_dir, run, args)
        if work.name in release_out.recover(out_dir):  # this release, killed after its commit: it is in place
            log.info("release %s: finished publishing the release a killed command had written", out_dir)
            return json.loads((out_dir / RELEASE_JSON).read_text(encoding="utf-8"))
        release_out.check_out_dir(out_dir, overwrite)
        for entry in out_dir.iterdir():  # another release's work (other arguments): start over
            if entry.name.startswith(release_out.WORK_PREFIX) and entry != work:
                shutil.rmtree(entry)
        work.mkdir(exist_ok=True)
        try:
            release = _build(run_dir, run, work, out_dir, args, workers=workers, ray_address=ray_address,
                             progress=progress)
        except BaseException:
            if not any((work / "done").rglob("*.json")) and not any((work / "gather").glob("*.json")):
                shutil.rmtree(work, ignore_errors=True)  # nothing to resume: leave no trace
            raise
        release_out.finish(work)
    return release


def _check_sizes(shard_rows: int, shard_bytes: int | None, workers: int) -> None:
    if shard_rows < 1:
        raise ValueError(f"--shard-rows must be >= 1, got {shard_rows}")
    if shard_bytes is not None and shard_bytes < 1:
        raise ValueError(f"--shard-bytes must be >= 1 (or left out), got {shard_bytes}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")


def _build(run_dir: Path, run: dict[str, Any], work: Path, out_dir: Path, args: dict[str, Any], *, workers: int,
           ray_address: str | None, progress: bool) -> dict[str, Any]:
    """Plan, write the shards not done yet, write the top files and move the release into place."""
    formats = tuple(args["formats"])
    t0 = time.monotonic()
    plan = _plan(run_dir, work, args)
    todo = [s for s in plan.shards if read_done(work, s) is None]
    t1 = time.monotonic()
    log.info("release plan: %d shards (%d done before) in %.1f s", len(plan.shards), len(plan.shards) - len(todo),
             t1 - t0)
    with TaskRunner(workers=workers, address=ray_address, record_dir=work) as runner:
        if todo:  # every shard done before: nothing to gather
            gathers = [g for g in plan.gather_jobs if read_gathered(g) is None]
            runner.map(gather, gathers, desc="gather", unit="job", total=len(plan.gather_jobs), progress=progress)
            sources = shard_sources(plan.gather_jobs)
            jobs = [ShardJob(str(run_dir), str(work), s, formats, tuple(sources.get((s.lang, s.n), ())))
                    for s in todo]
            runner.map(write_shard, jobs, desc="release", unit="shard", total=len(plan.shards), progress=progress)
    log.info("release shards: %d written in %.1f s", len(todo), time.monotonic() - t1)
    written = merge_records(work, plan.shards)
    release = release_metadata(
        run_dir, run, written, formats=formats, release_license=args["release_license"],
        sharding={k: args[k] for k in ("seed", "shard_rows", "shard_bytes", "langs")},
        excluded={"by_license": plan.excluded_by_license, "by_lang": plan.excluded_by_lang})
    _write_top_files(work, release, run, written)
    release_out.publish(work, out_dir, [*formats, *release_out.TOP_FILES, RELEASE_JSON])
    return release
