"""`sync-sdk` command line: predict, scan, batch, demo, convert, export, info (+ cli_analysis.py:
desync, attribute, search-offset, visual-features)."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from sync_sdk.analysis.plots import plot_timeline
from sync_sdk.cli.analysis import register
from sync_sdk.engine import SyncEngine
from sync_sdk.errors import InputError, SyncSDKError
from sync_sdk.geometry import class_to_offset, offset_to_class
from sync_sdk.runtime.loading import bundled_models, resolve_model, versions
from sync_sdk.runtime.views import parse_views
from sync_sdk.serving.batch import read_file_list, run_batch
from sync_sdk.serving.ray_batch import run_from_cli
from sync_sdk.synthetic import generate_clip, write_clip
from sync_sdk.version import __version__
from sync_sdk.weights.checkpoint import convert_checkpoint
from sync_sdk.weights.download import default_cache_dir

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3

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
  3  model or runtime error (checkpoint, download, backend)

models (--model): a bundled name (synthetic-tiny, offline), an official checkpoint id (downloaded
once; default 24-01-04T16-39-21, AudioSet), a checkpoint file, or an export directory.
"""


def _add_model_args(p: argparse.ArgumentParser, default: str | None = None, views: bool = False) -> None:
    """--model, --backend, --device, --precision, --threads; with views, --shift-views (views.py)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default,
                   help="bundled name, official id, checkpoint file or export dir "
                        f"(default: {default or 'the official AudioSet checkpoint'})")
    g.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "torch"])
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"])
    g.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime")
    if views:
        g.add_argument("--shift-views", default=None, type=_views, metavar="S,S,..",
                       help="audio shifts (s) whose views each answer combines, e.g. -0.2,0,0.2; 0 = one "
                            "window (default: the model folder's inference.json; synthetic-tiny: -0.2,0,0.2)")


def _views(text: str) -> tuple[float, ...]:
    try:
        return parse_views(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _engine(args):
    kwargs = {"threads": args.threads} if args.threads else {}
    if getattr(args, "shift_views", None) is not None:
        kwargs["shift_views"] = args.shift_views
    return SyncEngine.from_pretrained(args.model, backend=args.backend, device=args.device,
                                      precision=args.precision, **kwargs)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _describe(res) -> str:
    side = "audio leads video" if res.offset_sec > 0 else "audio lags video" if res.offset_sec < 0 else "in sync"
    tol = "yes" if res.in_sync_tolerant else "no"
    return (f"offset {res.offset_sec:+.1f} s ({side}), p={res.confidence:.3f}, class {res.class_index}; "
            f"in sync within +-0.2 s: {tol}")


# ---------------------------------------------------------------------------- commands
def cmd_predict(args) -> int:
    engine = _engine(args)
    syncability = engine.config.variant == "synchronizability"
    failed, out = 0, []
    for f in args.files:
        try:
            if syncability:
                p = engine.synchronizability(f, start_sec=args.start)
                rec = {"file": f, "status": "ok", "synchronizability": p}
                text = f"synchronizable with probability {p:.3f}"
            else:
                res = engine.predict(f, start_sec=args.start)
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
    engine = _engine(args)
    with tqdm(desc="scan", unit="window", file=sys.stderr, disable=args.quiet) as bar:
        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)
        timeline = engine.scan(args.file, hop_sec=args.hop, cache=not args.no_cache, progress=progress)
    fmt = args.format or ("json" if args.out and str(args.out).endswith(".json") else "csv")
    text = timeline.to_json(probs=args.probs) if fmt == "json" else timeline.to_csv()
    if args.out:
        Path(args.out).write_text(text if text.endswith("\n") else text + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.plot:
        plot_timeline(timeline, args.plot)
    s = timeline.summary()
    print(f"{args.file}: {s['n_windows']} windows, overall offset {s['offset_sec']:+.1f} s "
          f"(mean p={s['mean_prob']:.3f}); segments encoded: "
          f"{engine.cache_stats()['visual_segments_encoded']}", file=sys.stderr)
    return EXIT_OK


def cmd_batch(args) -> int:
    if args.ray:
        if args.shift_views not in (None, (0.0,)):
            raise InputError("batch --ray scores one window per clip; combining --shift-views needs the local "
                             "batch (without --ray)")
        return run_from_cli(args)
    files = list(args.files)
    for lst in args.list or []:
        files += read_file_list(lst)
    if not files:
        raise InputError("no input files: give paths and/or --list FILE")
    engine = _engine(args)
    summary = run_batch(engine, files, args.out, resume=args.resume, start_sec=args.start,
                        progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.to_dict().items() if k != "failures"}), file=sys.stderr)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


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


def cmd_convert(args) -> int:
    ck = convert_checkpoint(args.src, args.dst, allow_unsafe=args.allow_unsafe, config=args.config)
    print(f"{args.src} -> {args.dst}: {ck.config.variant} model, {len(ck.state_dict)} tensors")
    return EXIT_OK


def cmd_export(args) -> int:
    from sync_sdk.export_onnx import export_model, resolve_backend
    model, model_id = str(args.model), None
    if model in bundled_models():  # the exporter reads files, ids and "tiny": hand it the bundled file
        src = resolve_model(model)
        if src.checkpoint is None:
            raise InputError(f"bundled model {model} has no checkpoint file to export")
        model, model_id = str(src.checkpoint), src.model_id
    precision = args.precision
    if precision is None:
        precision = "fp16" if resolve_backend(args.backend, "fp16")[0] == "tensorrt" else "fp32"
    export_model(model, args.out_dir, model_id=model_id, precision=precision, backend=args.backend,
                 variants=args.variants, max_clips=args.max_clips, say=lambda m: print(m, file=sys.stderr))
    print(f"exported {args.model} to {args.out_dir} ({precision}); use it with --model {args.out_dir}")
    return EXIT_OK


def cmd_info(args) -> int:
    info = {"versions": versions(), "bundled_models": bundled_models()}
    try:
        import onnxruntime
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = []
    info["gpu"] = _gpu_info()
    info["checkpoint_cache"] = _cache_info()
    if args.model is not None:
        info["engine"] = _engine(args).info()
    if args.json:
        _print_json(info)
        return EXIT_OK
    print("versions:  " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
    print(f"providers: {', '.join(info['onnxruntime_providers']) or 'onnxruntime not installed'}")
    print(f"gpu:       {info['gpu'] or 'none found'}")
    c = info["checkpoint_cache"]
    print(f"cache:     {c['dir']} ({len(c['files'])} checkpoints, {c['bytes'] / 1e6:.1f} MB)")
    print(f"bundled:   {', '.join(info['bundled_models']) or 'none'}")
    if "engine" in info:
        e = info["engine"]
        print(f"engine:    {e['model_id']} on {e['backend']} ({e['precision']}); " + "; ".join(e.get("notes", [])))
    return EXIT_OK


def _gpu_info() -> list[str]:
    """GPU names from nvidia-smi (no CUDA library needed), [] when there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]


def _cache_info() -> dict:
    d = default_cache_dir() / "checkpoints"
    files = sorted(p for p in d.glob("*") if p.is_file() and not p.name.endswith(".part")) if d.is_dir() else []
    return {"dir": str(d), "files": [p.name for p in files], "bytes": sum(p.stat().st_size for p in files)}


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
    sp.add_argument("--start", type=float, default=0.0, help="window start in seconds (default 0)")
    sp.add_argument("--json", action="store_true", help="print JSON (probabilities included)")
    _add_model_args(sp, views=True)
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("scan", help="timeline of offsets over a whole file", formatter_class=fmt,
                        description="Windows every --hop seconds over the whole file; each 0.32-s segment "
                                    "is encoded once.\n\n" + DESCRIPTION, epilog=EPILOG)
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--hop", type=float, default=0.32, help="seconds between windows, a multiple of 0.32")
    sp.add_argument("--format", choices=["csv", "json"], help="timeline format (default csv, or json for "
                                                              "an --out ending in .json)")
    sp.add_argument("--out", type=Path, help="write the timeline here instead of stdout")
    sp.add_argument("--probs", action="store_true", help="JSON: include the 21 probabilities per window")
    sp.add_argument("--plot", type=Path, metavar="PNG", help="plot offset and confidence over time")
    sp.add_argument("--no-cache", action="store_true", help="re-encode every window (for comparison)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(sp, views=True)
    sp.set_defaults(func=cmd_scan)

    sp = sub.add_parser("batch", help="many files, one JSON line each (resumable)", formatter_class=fmt,
                        description="Predict every file; one JSON line per file is appended to --out as "
                                    "it finishes ({'file', 'status': 'ok'|'error', 'result' | 'error', "
                                    "'message'}). Failures are recorded and the batch goes on.", epilog=EPILOG)
    sp.add_argument("files", nargs="*", metavar="FILE")
    sp.add_argument("--list", action="append", metavar="TXT", help="text file with one path per line")
    sp.add_argument("--out", required=True, type=Path, help="JSONL output file")
    sp.add_argument("--resume", action="store_true", help="skip files that already have an ok line in --out")
    sp.add_argument("--start", type=float, default=0.0, help="window start in seconds")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--ray", action="store_true",
                    help="run on Ray Data (pip install 'sync-sdk[ray]'): FILE is one CSV/Parquet manifest "
                         "(path[, start_sec, offset_sec]) and --out a folder of Parquet shards; inputs "
                         "already scored ok there are skipped")
    sp.add_argument("--address", help="with --ray: Ray cluster address (default: a new local cluster)")
    sp.add_argument("--workers", type=int, help="with --ray: model actors (default: one per GPU, else half the CPUs)")
    _add_model_args(sp, views=True)
    sp.set_defaults(func=cmd_batch)

    sp = sub.add_parser("demo", help="synthetic clip with a known shift, predicted offline", formatter_class=fmt,
                        description="Render a synthetic clip, shift its audio by --offset seconds (positive = "
                                    "audio leads) and predict it with the bundled model.", epilog=EPILOG)
    sp.add_argument("--offset", type=float, default=0.6, help="audio shift in seconds, -2..2 (default 0.6)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--duration", type=float, default=5.2, help="clip length in seconds (>= 5)")
    sp.add_argument("--kind", choices=["mixed", "beep_flash"], default=None)
    sp.add_argument("--save", type=Path, help="also write the clip as an mp4")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    _add_model_args(sp, default="synthetic-tiny", views=True)
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("convert", help="official .pt -> safetensors", formatter_class=fmt, epilog=EPILOG)
    sp.add_argument("src")
    sp.add_argument("dst")
    sp.add_argument("--allow-unsafe", action="store_true",
                    help="allow full unpickling for files the restricted loader refuses (runs code in the file)")
    sp.add_argument("--config", choices=["sync", "synchronizability", "tiny"],
                    help="model config (default: inferred from the tensor shapes; needed for non-official widths)")
    sp.set_defaults(func=cmd_convert)

    sp = sub.add_parser("export", help="export a model to ONNX (and TensorRT engines on a GPU)",
                        formatter_class=fmt, epilog=EPILOG,
                        description="Export the three stages (audio encoder, visual encoder, head) to ONNX "
                                    "with a manifest; with TensorRT and a GPU also build engines. The "
                                    "directory is then a --model for every command.")
    sp.add_argument("model", help="bundled name, official id, checkpoint file, or 'tiny' (random weights)")
    sp.add_argument("out_dir", type=Path)
    sp.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                    help="default variant: fp16 with TensorRT, else fp32 (int8: ONNX Runtime CPU)")
    sp.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    sp.add_argument("--variants", nargs="*", choices=["fp16", "int8"], default=[],
                    help="further ONNX precision variants to write")
    sp.add_argument("--max-clips", type=int, default=4, help="largest batch of 14-segment clips an engine takes")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("info", help="versions, providers, GPU, checkpoint cache", formatter_class=fmt,
                        epilog=EPILOG)
    sp.add_argument("--json", action="store_true")
    _add_model_args(sp)
    sp.set_defaults(func=cmd_info)

    register(sub, _add_model_args, _engine, EPILOG)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sync-sdk` console script; returns the exit code (see --help)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(f"sync-sdk: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SyncSDKError as e:
        print(f"sync-sdk: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_MODEL
    except KeyboardInterrupt:
        print("sync-sdk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
