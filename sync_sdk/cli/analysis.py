"""`sync-sdk` subcommands of the analysis features: desync, attribute, search-offset, visual-features.

cli.build_parser calls `register(sub, add_model_args, make_engine)`; each command returns an exit code
(0 ok, 1 some clips failed) and lets SyncSDKError reach cli.main, which maps it to 2 / 3.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sync_sdk.cli.args import check_output, check_plot, finite_float
from sync_sdk.errors import InputError
from sync_sdk.serving.desync_jobs import desync_dir


def register(sub, add_model_args, make_engine, epilog: str = "") -> None:
    """Add the four subcommands to the argparse subparsers `sub`."""
    fmt = argparse.RawDescriptionHelpFormatter

    def run(fn, check=None):
        def call(args):
            if check:  # output paths and optional packages, before the model is loaded
                check(args)
            return fn(args, make_engine(args))
        return call

    def wrap(text: str) -> str:
        return textwrap.fill(text, 90)

    sp = sub.add_parser(
        "desync", help="DeSync of generated audio against videos (av-benchmark compatible)", formatter_class=fmt,
        epilog=epilog, description=wrap(
            "Mean |predicted offset| (s) of each video/audio pair, paired by file stem, as "
            "hkchengrex/av-benchmark computes it: 25 fps, shortest side 224 (bicubic) + centre crop, 16 kHz "
            "mono audio cut to the clip length, the head on the first and the last 14 segments. "
            "Use the AudioSet model (default; av-benchmark's synchformer_state_dict.pth works as --model). "
            "One JSON line per clip goes to --out as it finishes; the summary (mean DeSync) is printed."))
    sp.add_argument("--videos", required=True, type=Path, help="folder of videos (or one video file)")
    sp.add_argument("--audios", required=True, type=Path, help="folder of generated audio (or one file)")
    sp.add_argument("--out", type=Path, help="JSONL output, one line per clip (required for folders)")
    sp.add_argument("--duration", type=finite_float, help="clip length in seconds (default: each audio's length)")
    sp.add_argument("--protocol", choices=["first_last", "cover"], default="first_last",
                    help="first_last: av-benchmark; cover: non-overlapping windows over the whole clip")
    sp.add_argument("--preset", choices=["av-benchmark", "synchformer"], default="av-benchmark")
    sp.add_argument("--batch-clips", type=int, default=8, help="clips per encoder/head pass")
    sp.add_argument("--resume", action="store_true", help="skip clips that already have an ok line in --out")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(sp)
    sp.set_defaults(func=run(cmd_desync, lambda a: check_output(a.out, "--out")))

    sp = sub.add_parser(
        "attribute", help="which segments / regions the prediction rests on (PNG + JSON)", formatter_class=fmt,
        epilog=epilog, description=wrap(
            "Corrupt random parts of the 5-s window at --start (audio segments, visual segments, "
            "time-frequency cells, spatial patches) over many trials and score each part by how much "
            "corrupting it moves the predicted offset distribution."))
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--start", type=finite_float, default=0.0, help="window start in seconds")
    sp.add_argument("--trials", type=int, default=64, help="trials per family")
    sp.add_argument("--families", nargs="+", choices=["audio", "video", "spectral", "patch"],
                    default=["audio", "video", "spectral", "patch"])
    sp.add_argument("--corrupt-prob", type=float, default=0.3,
                    help="chance each part is corrupted in a trial; raise it (0.7, with --measure kl) "
                         "when the prediction is near-certain")
    sp.add_argument("--measure", choices=["prob_drop", "kl"], default="prob_drop")
    sp.add_argument("--method", choices=["mean_diff", "regression"], default="mean_diff")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--png", type=Path, help="write the figure here")
    sp.add_argument("--json", type=Path, help="write the scores here (default: stdout)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(sp)
    sp.set_defaults(func=run(cmd_attribute, check_attribute))

    sp = sub.add_parser(
        "search-offset", help="offsets beyond +-2 s: shift the audio in steps and combine", formatter_class=fmt,
        epilog=epilog, description=wrap(
            "Estimate an offset up to +-MAX seconds (positive = audio leads) by running the model on the "
            "video against the audio shifted in --step increments and combining the predictions."))
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--max-offset", type=finite_float, default=6.0, help="largest |offset| searched (s)")
    sp.add_argument("--step", type=finite_float, default=1.6, help="shift step (s), a multiple of 0.2")
    sp.add_argument("--start", type=finite_float, help="preferred video window start (default: the middle)")
    sp.add_argument("--json", action="store_true", help="print JSON (every shift included)")
    add_model_args(sp, views=True)
    sp.set_defaults(func=run(cmd_search_offset))

    sp = sub.add_parser(
        "visual-features", help="visual encoder features (S*8, D) at 25 fps, as a .npy", formatter_class=fmt,
        epilog=epilog, description=wrap("Synchformer visual features for conditioning (MMAudio-style): "
                                        "segments of 16 frames every 8 frames, (S*8, D) float32."))
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--out", type=Path, required=True, help=".npy output")
    sp.add_argument("--preset", choices=["av-benchmark", "synchformer"], default="av-benchmark")
    sp.add_argument("--duration", type=finite_float, help="only the first seconds")
    add_model_args(sp)
    sp.set_defaults(func=run(cmd_visual_features, lambda a: check_output(a.out, "--out", (".npy",))))


def cmd_desync(args, engine) -> int:
    if args.videos.is_file() and args.audios.is_file():
        res = engine.desync(args.videos, args.audios, duration_sec=args.duration, protocol=args.protocol,
                     preset=args.preset)
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    if args.out is None:
        raise InputError("--out JSONL is required when --videos / --audios are folders")
    summary = desync_dir(engine, args.videos, args.audios, args.out, duration_sec=args.duration,
                         protocol=args.protocol, preset=args.preset, batch_clips=args.batch_clips,
                         resume=args.resume, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 1 if summary["n_failed"] else 0


def check_attribute(args) -> None:
    check_plot(args.png, "--png")
    check_output(args.json, "--json")


def cmd_attribute(args, engine) -> int:
    with tqdm(desc="attribute", unit="trial", file=sys.stderr, disable=args.quiet) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        attr = engine.attribute(args.file, trials=args.trials, start_sec=args.start, families=args.families,
                                corrupt_prob=args.corrupt_prob, measure=args.measure, method=args.method,
                                seed=args.seed, png=args.png, progress=progress)
    text = json.dumps(attr.to_dict(), indent=2)
    if args.json:
        args.json.write_text(text + "\n")
        print(f"{args.file}: scores written to {args.json}", file=sys.stderr)
    else:
        print(text)
    if args.png:
        print(f"{args.file}: figure written to {args.png}", file=sys.stderr)
    return 0


def cmd_search_offset(args, engine) -> int:
    res = engine.search_offset(args.file, max_offset_sec=args.max_offset, step_sec=args.step, start_sec=args.start)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print(f"{args.file}: offset {res.offset_sec:+.1f} s (positive = audio leads), p={res.confidence:.3f}, "
              f"supported by {res.support} of {len(res.shifts)} shifts")
    return 0


def cmd_visual_features(args, engine) -> int:
    feats = engine.visual_features(args.file, preset=args.preset, duration_sec=args.duration)
    np.save(args.out, feats)
    print(f"{args.file}: features {feats.shape} written to {args.out}", file=sys.stderr)
    return 0
