"""`sync-sdk` command line: predict, scan, batch, demo; models.py adds convert, export and info,
analysis.py desync, attribute, search-offset and visual-features; args.py holds the shared options."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from sync_sdk.analysis.plots import plot_timeline
from sync_sdk.cli.analysis import register
from sync_sdk.cli.args import add_model_args, check_output, check_plot, finite_float, join_list_values
from sync_sdk.cli.models import register_models
from sync_sdk.cli.serve import register_serve
from sync_sdk.engine import SyncEngine
from sync_sdk.errors import InputError, SyncSDKError
from sync_sdk.geometry import class_to_offset, offset_to_class
from sync_sdk.serving.batch import check_output_file, read_file_list, run_batch
from sync_sdk.serving.ray_batch import run_from_cli
from sync_sdk.synthetic import generate_clip, write_clip
from sync_sdk.version import __version__

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
REFINE_HELP = ("continuous offset_sec (finer than the 0.2-s classes) with an interval: the audio is also "
               "scored shifted in 80-ms steps within +-0.32 s; the class stays in class_offset_sec")

DESCRIPTION = """\
Audio-visual synchronisation offsets with Synchformer.

Units and conventions:
  offset_sec   seconds, on the model's grid of 21 classes from -2.0 to +2.0 in steps of 0.2.
               POSITIVE = the audio LEADS the video (a sound is heard before its picture);
               negative = the audio lags. 0.0 = in sync; "in sync (+-1 class)" allows +-0.2 s.
               To fix a file, delay its audio by offset_sec (advance it when negative).
  window       the model looks at a 5-s crop (14 segments of 0.64 s, step 0.32 s); --start picks
               the crop start (s). Scans put windows on the 0.32-s grid: --hop is a multiple of 0.32.
  media        any file PyAV decodes; it is resampled to 25 fps and 16 kHz mono.
"""

EPILOG = """\
exit codes:
  0  success
  1  some files failed (batch / several predict files); the others were processed
  2  usage or input error (bad arguments, missing/undecodable/too-short media)
  3  model or runtime error (checkpoint, download, backend, a missing optional package)
  141 the reader of the output stopped early (e.g. | head)

models (--model): a bundled name (synthetic-tiny, offline), an official checkpoint id (downloaded
once; default 24-01-04T16-39-21, AudioSet), a checkpoint file, or an export directory.
"""


def _engine(args):
    kwargs = {"threads": args.threads} if args.threads else {}
    if args.allow_unsafe:
        kwargs["allow_unsafe"] = True
    if args.max_checkpoint_bytes is not None:
        kwargs["max_checkpoint_bytes"] = args.max_checkpoint_bytes
    if getattr(args, "shift_views", None) is not None:
        kwargs["shift_views"] = args.shift_views
    return SyncEngine.from_pretrained(args.model, backend=args.backend, device=args.device,
                                      precision=args.precision, **kwargs)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _describe(res) -> str:
    """One line: the offset, or why there is none; the views combined when there are several."""
    if not res.has_evidence:
        text = (f"no evidence ({', '.join(f.replace('_', ' ') for f in res.flags)}): the model's answer "
                f"{res.offset_sec:+.1f} s (p={res.confidence:.3f}) means nothing")
    else:
        side = "audio leads video" if res.offset_sec > 0 else "audio lags video" if res.offset_sec < 0 else "in sync"
        tol = "yes" if res.in_sync_tolerant else "no"
        if res.refined:
            low, high = res.offset_interval_sec
            side += f"; interval {low:+.3f}..{high:+.3f} s, class {res.class_offset_sec:+.1f} s"
        text = (f"offset {res.offset_sec:+.{3 if res.refined else 1}f} s ({side}), p={res.confidence:.3f}, "
                f"class {res.class_index}; in sync within +-0.2 s: {tol}")
    if len(res.views) > 1:
        text += "; views " + ", ".join(f"{d:+.1f}" + (f" (video at {v:.2f} s)" if abs(v - res.start_sec) > 1e-6 else "")
                                       for d, v in res.views)
    return text


# ---------------------------------------------------------------------------- commands
def cmd_predict(args) -> int:
    engine = _engine(args)
    syncability = engine.config.variant == "synchronizability"
    if syncability and args.refine:
        raise InputError("--refine refines an offset; a synchronizability model gives none")
    failed, out = 0, []
    for f in args.files:
        try:
            if syncability:
                p = engine.synchronizability(f, start_sec=args.start)
                rec = {"file": f, "status": "ok", "synchronizability": p}
                text = f"synchronizable with probability {p:.3f}"
            else:
                res = engine.predict(f, start_sec=args.start, refine=args.refine)
                rec, text = {"file": f, "status": "ok", "result": res.to_dict()}, _describe(res)
        except InputError as e:
            if len(args.files) == 1:
                raise
            failed += 1
            out.append({"file": f, "status": "error", "error": type(e).__name__, "message": str(e)})
            print(f"{f}: error: {e}", file=sys.stderr)
            continue
        out.append(rec)
        if not args.json:
            print(f"{f}: {text}")
    if args.json:
        _print_json(out[0] if len(out) == 1 else out)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_scan(args) -> int:
    check_output(args.out, "--out")
    check_plot(args.plot, "--plot")
    engine = _engine(args)
    with tqdm(desc="scan", unit="window", file=sys.stderr, disable=args.quiet) as bar:
        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)
        timeline = engine.scan(args.file, hop_sec=args.hop, cache=not args.no_cache, progress=progress,
                               refine=args.refine)
    fmt = args.format or ("json" if args.out and str(args.out).endswith(".json") else "csv")
    text = timeline.to_json(probs=args.probs) if fmt == "json" else timeline.to_csv()
    if args.out:
        Path(args.out).write_text(text if text.endswith("\n") else text + "\n")
        print(f"timeline ({fmt}) written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.plot:
        print(f"plot written to {plot_timeline(timeline, args.plot)}", file=sys.stderr)
    s = timeline.summary()
    print(f"{args.file}: {s['n_windows']} windows, overall offset {s['offset_sec']:+.1f} s (its probability "
          f"averaged over the windows: {s['mean_prob']:.3f}; each window's confidence is in the timeline); "
          f"segments encoded: {engine.cache_stats()['visual_segments_encoded']}", file=sys.stderr)
    if args.refine and s.get("median_window_offset_sec") is not None:
        print(f"{args.file}: median refined window offset {s['median_window_offset_sec']:+.3f} s", file=sys.stderr)
    return EXIT_OK


def cmd_batch(args) -> int:
    mode = "overwrite" if args.overwrite else "retry-failed" if args.retry_failed else \
        "resume" if args.resume else "new"
    if args.ray:
        if args.refine:
            raise InputError("batch --ray answers the class offsets; --refine needs the local batch (without --ray)")
        if args.shift_views not in (None, (0.0,)):
            raise InputError("batch --ray scores one window per clip; combining --shift-views needs the local "
                             "batch (without --ray)")
        return run_from_cli(args, mode)
    files = list(args.files)
    for lst in args.list or []:
        files += read_file_list(lst)
    if not files:
        raise InputError("no input files: give paths and/or --list FILE")
    check_output_file(args.out, mode)  # before the model loads
    engine = _engine(args)
    summary = run_batch(engine, files, args.out, mode=mode, start_sec=args.start, progress=not args.quiet,
                        refine=args.refine)
    print(json.dumps({k: v for k, v in summary.to_dict().items() if k != "failures"}), file=sys.stderr)
    return EXIT_SOME_FAILED if summary.failed or summary.failed_before else EXIT_OK


def cmd_demo(args) -> int:
    if not -2.0 <= args.offset <= 2.0:
        raise InputError(f"--offset must be within [-2, 2] s (the model's range), got {args.offset}")
    clip = generate_clip(args.seed, offset_sec=args.offset, duration_sec=args.duration, kind=args.kind)
    if args.save:
        write_clip(clip, args.save)
    engine = _engine(args)
    res = engine.predict((clip.frames, clip.fps, clip.audio, clip.sample_rate))
    true_grid = class_to_offset(offset_to_class(args.offset))
    out = {
        "true_offset_sec": float(args.offset),
        "predicted_offset_sec": res.offset_sec,
        "correct": res.offset_sec == true_grid,
        "confidence": res.confidence,
        "class_index": res.class_index,
        "topk": [{"offset_sec": o, "prob": p} for o, p in res.topk],
        "seed": args.seed,
        "kind": clip.kind,
        "model": engine.model_id,
        "backend": engine.backend.name,
        "saved_to": str(args.save) if args.save else None,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"synthetic {clip.kind} clip (seed {args.seed}, {args.duration:.1f} s), audio shifted by "
              f"{args.offset:+.2f} s (positive = audio leads)")
        print(f"true offset:      {args.offset:+.2f} s")
        print(f"predicted offset: {res.offset_sec:+.1f} s  (p={res.confidence:.3f}, model {engine.model_id}, "
              f"{engine.backend.name})  {'correct' if out['correct'] else 'WRONG'}")
        if args.save:
            print(f"clip written to {args.save}")
    return EXIT_OK


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="sync-sdk", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"sync-sdk {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sp = sub.add_parser("predict", help="offset of one 5-s window per file", formatter_class=fmt,
                        description="Predict the offset of the 5-s window starting at --start (with a "
                                    "synchronizability model, e.g. 24-01-22T20-34-52: the probability that "
                                    "the window can be synchronised at all).\n\n" + DESCRIPTION,
                        epilog=EPILOG)
    sp.add_argument("files", nargs="+", metavar="FILE")
    sp.add_argument("--start", type=finite_float, default=0.0, help="window start in seconds (default 0)")
    sp.add_argument("--json", action="store_true", help="print JSON (probabilities included)")
    sp.add_argument("--refine", action="store_true", help=REFINE_HELP)
    add_model_args(sp, views=True)
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("scan", help="timeline of offsets over a whole file", formatter_class=fmt,
                        description="Windows every --hop seconds over the whole file; each 0.32-s segment "
                                    "is encoded once.\n\n" + DESCRIPTION, epilog=EPILOG)
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--hop", type=finite_float, default=0.32, help="seconds between windows, a multiple of 0.32")
    sp.add_argument("--format", choices=["csv", "json"], help="timeline format (default csv, or json for "
                                                              "an --out ending in .json)")
    sp.add_argument("--out", type=Path, help="write the timeline here instead of stdout")
    sp.add_argument("--probs", action="store_true", help="JSON: include the 21 probabilities per window")
    sp.add_argument("--plot", type=Path, metavar="PNG", help="plot offset and confidence over time")
    sp.add_argument("--no-cache", action="store_true", help="re-encode every window (for comparison)")
    sp.add_argument("--refine", action="store_true", help=REFINE_HELP + " per window (CSV/JSON columns "
                    "class_offset_sec, offset_low_sec, offset_high_sec)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(sp, views=True)
    sp.set_defaults(func=cmd_scan)

    sp = sub.add_parser("batch", help="many files, one JSON line each (resumable)", formatter_class=fmt,
                        description="""\
Predict every file; one JSON line per file is appended to --out as it finishes
({'file', 'status': 'ok'|'error', 'result' | 'error', 'message'}). Failures are recorded and the
batch goes on; a file given twice is done once. Each line is written whole and fsynced, so a
killed batch leaves complete lines only, and --resume finishes it.

--out is a file in a folder that exists. An --out that already holds lines is refused unless one of
--resume, --retry-failed, --overwrite says what to do with it (as GNU parallel's --resume and
--resume-failed). When a run ends, --out holds exactly one line per file. With --ray, --out is a
folder of Parquet shards; the three options act on its rows the same way (read_results() gives
one row per input).

Relative paths in a --list file are relative to the list file's folder (as in --ray manifests);
--list - reads paths from stdin, relative to the current folder. Exit code 1 when any file's line
is an error, also one that --resume skipped.""", epilog=EPILOG)
    sp.add_argument("files", nargs="*", metavar="FILE")
    sp.add_argument("--list", action="append", metavar="TXT",
                    help="text file with one path per line (relative to its folder); - for stdin")
    sp.add_argument("--out", required=True, type=Path, help="JSONL output file (its folder must exist)")
    done = sp.add_mutually_exclusive_group()
    done.add_argument("--resume", action="store_true",
                      help="keep --out's lines: skip files with a line (ok or error), run the rest")
    done.add_argument("--retry-failed", action="store_true",
                      help="as --resume, but also run files whose line is an error (the new line replaces it)")
    done.add_argument("--overwrite", action="store_true", help="start --out afresh")
    sp.add_argument("--start", type=finite_float, default=0.0, help="window start in seconds")
    sp.add_argument("--refine", action="store_true", help=REFINE_HELP + " (not with --ray)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--ray", action="store_true",
                    help="run on Ray Data (pip install 'sync-sdk[ray]'): FILE is one CSV/Parquet manifest "
                         "(path[, start_sec, offset_sec]) and --out a folder of Parquet shards")
    sp.add_argument("--address", help="with --ray: Ray cluster address (default: a new local cluster)")
    sp.add_argument("--workers", type=int, help="with --ray: model actors (default: one per GPU, else half the CPUs)")
    add_model_args(sp, views=True)
    sp.set_defaults(func=cmd_batch)

    sp = sub.add_parser("demo", help="synthetic clip with a known shift, predicted offline", formatter_class=fmt,
                        description="Render a synthetic clip, shift its audio by --offset seconds (positive = "
                                    "audio leads) and predict it with the bundled model.", epilog=EPILOG)
    sp.add_argument("--offset", type=finite_float, default=0.6, help="audio shift in seconds, -2..2 (default 0.6)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--duration", type=finite_float, default=5.2, help="clip length in seconds (>= 5)")
    sp.add_argument("--kind", choices=["mixed", "beep_flash"], default=None)
    sp.add_argument("--save", type=Path, help="also write the clip as an mp4")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_args(sp, default="synthetic-tiny", views=True)
    sp.set_defaults(func=cmd_demo)

    register_models(sub, _engine, EPILOG)
    register_serve(sub, EPILOG)
    register(sub, add_model_args, _engine, EPILOG)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sync-sdk` console script; returns the exit code (see --help)."""
    args = build_parser().parse_args(join_list_values(sys.argv[1:] if argv is None else argv))
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below rather than at exit
        return code
    except BrokenPipeError:  # a reader such as `head` stopped early: no traceback, as other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except InputError as e:
        print(f"sync-sdk: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SyncSDKError as e:
        print(f"sync-sdk: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_MODEL
    except KeyboardInterrupt:
        print("sync-sdk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
