"""``granary train``, ``evaluate``, ``transcribe`` and ``plot-schedules`` (extra ``[train]``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from granary_pipe.cli import common

CHECKPOINT_HELP = ("a training directory (its latest checkpoint) or a checkpoint file in it, "
                   "DIR/checkpoints/ckpt-00000200.pt (the step, 8 digits)")


def parse_sets(items: list[str]) -> dict[str, Any]:
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
    """train a Conformer-CTC model on a release (extra [train]; rerun = resume)

    Train on the WebDataset shards of a release. Every shard it reads is checked against
    release.json first (exists, size, sha256): a missing or damaged one is named and nothing is
    trained. Rerunning with the same --out resumes from its latest checkpoint (the saved config is
    used when --config is not given). Without --ray-address/--workers: one process (DDP when
    launched by torchrun); with them: Ray Train workers. Needs the [train] extra: pip install 'granary_pipe[train]'.
    """
    from granary_pipe import bundled
    from granary_pipe.train.data import check_release, check_shards, is_url, open_release
    from granary_pipe.train.loop import resolve_config, train

    overrides = parse_sets(args.set)
    config = bundled.pipeline_path(args.config, kind="train") if args.config is not None else None
    check_release(args.data)  # a missing or wrong --data (path or URL) is refused before --out is created
    cfg = resolve_config(args.out, config, overrides)
    if not is_url(args.data):  # a URL is downloaded and verified into OUT/data by train()
        # every shard training reads, before the tokenizer or --out; under torchrun rank 0 alone reads
        # the files for their sha256 (the others check sizes)
        check_shards(open_release(args.data), cfg.data.langs, checksums=os.environ.get("RANK", "0") == "0",
                     progress=not common.quiet(args))
    if args.ray_address or args.workers:
        from granary_pipe.train.launch import train_with_ray

        summary = train_with_ray(args.data, args.out, cfg, num_workers=args.workers or 1,
                                 address=args.ray_address, max_steps=args.max_steps)
    else:
        from granary_pipe.train.distributed import from_env

        summary = train(args.data, args.out, cfg, max_steps=args.max_steps, dist=from_env(),
                        progress=not common.quiet(args))
    if summary.get("rank", 0) != 0:  # torchrun: rank 0 reports
        return common.EXIT_OK
    if args.json:
        common.print_json(summary)
        return common.EXIT_OK
    ev = summary.get("eval") or {}
    wer = f", held-out WER {ev['wer']:.3f} CER {ev['cer']:.3f}" if ev.get("wer") is not None else ""
    loss = f", loss {summary['loss']:.4f}" if summary.get("loss") is not None else ""
    print(f"train {args.out}: step {summary['step']}{loss}{wer}; checkpoint {summary['checkpoint']}")
    return common.EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """WER/CER of a checkpoint on a release split (greedy CTC)

    Score a checkpoint on a release: the held-out rows it never trained on by default. Exit 1 when
    the split has no utterances.
    """
    from granary_pipe.train.infer import evaluate

    result = evaluate(args.checkpoint, args.data, split=args.split, max_utts=args.max_utts, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return common.EXIT_OK if result["utterances"] else common.EXIT_CHECK_FAILED
    if result["utterances"] == 0:
        print(f"evaluate {result['checkpoint']}: no utterances in split {args.split} of {result['release']}")
        return common.EXIT_CHECK_FAILED
    print(f"evaluate {result['checkpoint']} (step {result['step']}) on {args.split} of {result['release']}: "
          f"{result['utterances']} utterances, WER {result['wer']:.4f}, CER {result['cer']:.4f}")
    return common.EXIT_OK


def _cmd_transcribe(args: argparse.Namespace) -> int:
    """transcribe audio files with a checkpoint (greedy CTC)

    Transcribe audio files (WAV, FLAC, OGG, MP3; other containers with PyAV) with a trained
    checkpoint, one line per file as each is done. A file that cannot be transcribed (missing, a
    directory, a FIFO, a symlink loop, empty, not decodable) is one line on stderr with its cause;
    the others are still transcribed, and the exit status is 1.
    """
    from granary_pipe.train.infer import iter_transcripts

    failed = 0
    for item in iter_transcripts(args.checkpoint, args.audio, device=args.device, errors="report"):
        if "error" in item:
            failed += 1
            print(f"granary transcribe: {item['audio']}: {item['error']}", file=sys.stderr, flush=True)
            if not args.json:
                continue
        print(json.dumps(item, ensure_ascii=False) if args.json else f"{item['audio']}\t{item['text']}", flush=True)
    if failed:
        print(f"granary transcribe: {failed} of {len(args.audio)} files failed", file=sys.stderr)
        return common.EXIT_CHECK_FAILED
    return common.EXIT_OK


def _cmd_plot_schedules(args: argparse.Namespace) -> int:
    """plot the four LR warmup schedules with inverse-sqrt decay

    Plot the linear, piecewise, exponential and polynomial warmup schedules, each followed by
    inverse-sqrt decay, into one image.
    """
    from granary_pipe.train.schedules import plot_schedules

    path = plot_schedules(args.out, peak_lr=args.peak_lr, warmup_steps=args.warmup_steps,
                          total_steps=args.total_steps, alpha=args.alpha, power=args.power)
    print(f"wrote {path}")
    return common.EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Register the training commands."""
    train_examples = (
        "granary train --data demo-release --out model --config train-tiny --max-steps 200",
        "granary train --data REL --out MODEL --set schedule.name=exponential --set data.loader_workers=4",
        "torchrun --nproc-per-node 2 -m granary_pipe.cli train --data REL --out MODEL",
        "granary train --data REL --out /data/MODEL --workers 4 --ray-address auto",
    )
    tr = common.command(sub, parents, "train", _cmd_train, examples=train_examples)
    tr.add_argument("--data", required=True, help="release directory, or the URL of its release.json "
                    "(downloaded into OUT/data, verified)")
    tr.add_argument("--out", type=Path, required=True, help="training directory (checkpoints, metrics, TensorBoard)")
    tr.add_argument("--config", default=None,
                    help="training YAML or a bundled config name: train-base, train-tiny (default: the "
                         "checkpoint's when resuming, else train-base)")
    tr.add_argument("--max-steps", type=int, default=None, help="optimizer steps in total (overrides train.max_steps)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, repeatable, e.g. schedule.name=exponential data.loader_workers=4")
    tr.add_argument("--ray-address", type=common.cluster_address, default=None, metavar="ADDRESS",
                    help=f"train with Ray Train on this Ray cluster: {common.CLUSTER_HELP}")
    tr.add_argument("--workers", type=int, default=None,
                    help="Ray Train workers (one GPU each when CUDA is available); without --ray-address "
                         "an embedded local Ray")
    common.add_json(tr, "the training summary")

    ev = common.command(sub, parents, "evaluate", _cmd_evaluate,
        examples=("granary evaluate --checkpoint model",
                  "granary evaluate --checkpoint model/checkpoints/ckpt-00000200.pt --data REL --split all --json"))
    ev.add_argument("--checkpoint", type=Path, required=True, help=CHECKPOINT_HELP)
    ev.add_argument("--data", default=None, help="release directory (default: the one the checkpoint trained on)")
    ev.add_argument("--split", choices=["heldout", "train", "all"], default="heldout",
                    help="rows to score; heldout = the checkpoint's held-out rows (default)")
    ev.add_argument("--max-utts", type=int, default=None, help="score at most this many utterances")
    ev.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    common.add_json(ev, "the result, with examples")

    ts = common.command(sub, parents, "transcribe", _cmd_transcribe,
        examples="granary transcribe --checkpoint model clip1.flac clip2.wav")
    ts.add_argument("--checkpoint", type=Path, required=True, help=CHECKPOINT_HELP)
    ts.add_argument("audio", nargs="+", type=Path, help="audio files")
    ts.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    common.add_json(ts, "one object per file")

    ps = common.command(sub, parents, "plot-schedules", _cmd_plot_schedules,
        examples="granary plot-schedules --out schedules.png --warmup-steps 500")
    ps.add_argument("--out", type=Path, required=True, help="image path (.png, .pdf, .svg)")
    ps.add_argument("--peak-lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    ps.add_argument("--warmup-steps", type=int, default=1000, help="warmup updates w (default 1000)")
    ps.add_argument("--total-steps", type=int, default=None, help="updates plotted (default 5w)")
    ps.add_argument("--alpha", type=float, default=1.5, help="exponential warmup rate (default 1.5)")
    ps.add_argument("--power", type=float, default=1.5, help="polynomial warmup exponent (default 1.5)")
