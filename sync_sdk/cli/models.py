"""`sync-sdk` subcommands that manage models: convert (a checkpoint to safetensors), export (ONNX graphs,
TensorRT engines) and info (versions, providers, GPU, checkpoint cache, the engine a --model gives)."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from sync_sdk.cli.args import add_model_args
from sync_sdk.errors import InputError
from sync_sdk.runtime.loading import bundled_models, resolve_model, versions
from sync_sdk.weights.checkpoint import convert_checkpoint
from sync_sdk.weights.download import default_cache_dir


def register_models(sub, make_engine, epilog: str = "") -> None:
    """Add convert, export and info to the argparse subparsers `sub`."""
    fmt = argparse.RawDescriptionHelpFormatter
    sp = sub.add_parser("convert", help="official .pt -> safetensors", formatter_class=fmt, epilog=epilog)
    sp.add_argument("src")
    sp.add_argument("dst")
    sp.add_argument("--allow-unsafe", action="store_true",
                    help="allow full unpickling for files the restricted loader refuses (runs code in the file)")
    sp.add_argument("--config", choices=["sync", "synchronizability", "tiny"],
                    help="model config (default: inferred from the tensor shapes; needed for non-official widths)")
    sp.add_argument("--max-checkpoint-bytes", type=int, default=None, metavar="N",
                    help="largest tensor data the file may declare (default 4 GiB or $SYNC_SDK_MAX_CHECKPOINT_BYTES)")
    sp.set_defaults(func=cmd_convert)

    sp = sub.add_parser("export", help="export a model to ONNX (and TensorRT engines on a GPU)",
                        formatter_class=fmt, epilog=epilog,
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
                        epilog=epilog)
    sp.add_argument("--json", action="store_true")
    add_model_args(sp)
    sp.set_defaults(func=lambda args: cmd_info(args, make_engine))


def cmd_convert(args) -> int:
    ck = convert_checkpoint(args.src, args.dst, allow_unsafe=args.allow_unsafe, config=args.config,
                            max_checkpoint_bytes=args.max_checkpoint_bytes)
    print(f"{args.src} -> {args.dst}: {ck.config.variant} model, {len(ck.state_dict)} tensors")
    return 0


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
    return 0


def cmd_info(args, make_engine) -> int:
    info = {"versions": versions(), "bundled_models": bundled_models()}
    try:
        import onnxruntime
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = []
    info["gpu"] = _gpu_info()
    info["checkpoint_cache"] = _cache_info()
    if args.model is not None:
        info["engine"] = make_engine(args).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("versions:  " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
    print(f"providers: {', '.join(info['onnxruntime_providers']) or 'onnxruntime not installed'}")
    print(f"gpu:       {info['gpu'] or 'none found'}")
    c = info["checkpoint_cache"]
    print(f"cache:     {c['dir']} ({len(c['files'])} checkpoints, {c['bytes'] / 1e6:.1f} MB)")
    print(f"bundled:   {', '.join(info['bundled_models']) or 'none'}")
    if "engine" in info:
        e = info["engine"]
        print(f"engine:    {e['model_id']} on {e['backend']} ({e['precision']}); " + "; ".join(e.get("notes", [])))
    return 0


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
