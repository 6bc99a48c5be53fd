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
from sync_sdk.inputs.layouts import LAYOUTS
from sync_sdk.serving.desync_jobs import PAIRINGS, desync_dir
from sync_sdk.serving.feature_jobs import FORMATS, INDEX, extract_features, list_clips


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
            "Mean |predicted offset| (s) of each video/audio pair, as hkchengrex/av-benchmark computes it: "
            "25 fps, shortest side 224 (torchvision's uint8 bicubic) + centre crop, 16 kHz mono audio cut to "
            "the clip length, the head on the first and the last 14 segments; a clip whose video or audio is "
            "shorter than the clip length is dropped (reported, left out of the mean). To match an "
            "av-benchmark run, pass its --audio_length as --duration (8 for MMAudio's VGGSound test set). "
            "Use the AudioSet model (default; av-benchmark's synchformer_state_dict.pth works as --model). "
            "One JSON line per clip goes to --out as it finishes; the summary (mean DeSync) is printed."))
    sp.add_argument("--videos", required=True, type=Path, help="folder of videos (or one video file)")
    sp.add_argument("--audios", required=True, type=Path, help="folder of generated audio (or one file)")
    sp.add_argument("--out", type=Path, help="JSONL output, one line per clip (required for folders)")
    sp.add_argument("--duration", type=finite_float,
                    help="clip length in seconds, for every clip: av-benchmark's --audio_length (default: each "
                         "audio file's length)")
    sp.add_argument("--fill-frames", type=int, default=0, metavar="N",
                    help="repeat the last frame when at most N frames are missing (default 0: drop the clip, "
                         "as av-benchmark does)")
    sp.add_argument("--pairing", choices=PAIRINGS, default="clean",
                    help="clean (default): audio stems cleaned by av-benchmark's clean_sample_name, then "
                         "matched to video stems; exact: audio stem = video stem")
    sp.add_argument("--protocol", choices=["first_last", "cover"], default="first_last",
                    help="first_last: av-benchmark; cover: non-overlapping windows over the whole clip")
    sp.add_argument("--layout", "--preset", dest="layout", choices=sorted(LAYOUTS), default="av-benchmark",
                    help="how frames become model inputs (inputs/layouts.py; av-benchmark: DeSync as published)")
    sp.add_argument("--batch-clips", type=int, default=8, help="clips per encoder/head pass")
    sp.add_argument("--refine", action="store_true",
                    help="DeSync = mean |refined offset| (continuous, the audio also scored shifted in "
                         "80-ms steps; not av-benchmark's grid value, which class_offsets keep)")
    sp.add_argument("--resume", action="store_true",
                    help="skip clips that already have an ok or dropped line in --out")
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
        "visual-features", help="visual encoder features (S*8, D) at 25 fps: a .npy, or shards for a folder",
        formatter_class=fmt, epilog=epilog, description=wrap(
            "Synchformer visual features for conditioning: segments of 16 frames every 8 frames at 25 fps, "
            "(S*8, D) float32, from the frames a project feeds Synchformer (--layout; any input frame rate). "
            "FILE --out x.npy for one video; --dir DIR or --list FILE --out DIR for many: feature shards "
            "(clip name -> array) and index.jsonl (one line per clip, ok or its error), resumable."))
    sp.add_argument("file", metavar="FILE", nargs="?", help="one video (or use --dir / --list)")
    sp.add_argument("--dir", type=Path, help="a folder of videos (not recursive)")
    sp.add_argument("--list", type=Path, help="a text file of video paths, one a line ('-': stdin)")
    sp.add_argument("--out", type=Path, required=True, help=".npy for FILE; a folder for --dir / --list")
    sp.add_argument("--layout", "--preset", dest="layout", choices=sorted(LAYOUTS), default="av-benchmark",
                    help="whose frames: av-benchmark (default), mmaudio, hunyuan-foley, thinksound, synchformer")
    sp.add_argument("--duration", type=finite_float, help="clip length in seconds, cut as the layout's project does")
    sp.add_argument("--format", choices=FORMATS, default="safetensors", help="shard format (folders)")
    sp.add_argument("--shard-clips", type=int, default=64, help="clips per shard (folders)")
    sp.add_argument("--resume", action="store_true", help="keep --out's features, run the clips without them")
    sp.add_argument("--overwrite", action="store_true", help="delete --out's index and shards first")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(sp)
    sp.set_defaults(func=run(cmd_visual_features, check_visual_features))


def cmd_desync(args, engine) -> int:
    if args.videos.is_file() and args.audios.is_file():
        res = engine.desync(args.videos, args.audios, duration_sec=args.duration, protocol=args.protocol,
                            layout=args.layout, fill_frames=args.fill_frames, refine=args.refine)
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    if args.out is None:
        raise InputError("--out JSONL is required when --videos / --audios are folders")
    summary = desync_dir(engine, args.videos, args.audios, args.out, duration_sec=args.duration,
                         protocol=args.protocol, layout=args.layout, batch_clips=args.batch_clips,
                         resume=args.resume, progress=not args.quiet, fill_frames=args.fill_frames,
                         pairing=args.pairing, refine=args.refine)
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


def check_visual_features(args) -> None:
    """One of FILE / --dir / --list; --out a .npy for FILE, a folder (made if absent) otherwise."""
    if sum(x is not None for x in (args.file, args.dir, args.list)) != 1:
        raise InputError("give one video FILE, or --dir DIR, or --list FILE (one of them)")
    if args.file is not None:
        check_output(args.out, "--out", (".npy",))
    elif args.out.suffix == ".npy" or args.out.is_file():
        raise InputError(f"--out {args.out}: --dir / --list write a folder of shards and {INDEX}; give a folder")


def cmd_visual_features(args, engine) -> int:
    if args.file is not None:
        feats = engine.visual_features(args.file, layout=args.layout, duration_sec=args.duration)
        np.save(args.out, feats)
        print(f"{args.file}: features {feats.shape} written to {args.out}", file=sys.stderr)
        return 0
    summary = extract_features(engine, list_clips(args.dir, args.list), args.out, layout=args.layout,
                               duration_sec=args.duration, fmt=args.format, shard_clips=args.shard_clips,
                               resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    print(f"{summary['ok']} clips' features in {args.out} ({len(summary['shards'])} new shards, {INDEX})",
          file=sys.stderr)
    return 1 if summary["failed"] else 0
