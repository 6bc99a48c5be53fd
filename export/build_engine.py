"""Export a Synchformer checkpoint to ONNX graphs (+ precision variants, TensorRT engines) and a manifest.

    python export/build_engine.py --checkpoint tiny --out exports/tiny
    python export/build_engine.py --checkpoint 24-01-04T16-39-21 --out exports/audioset --precision fp16
    python export/build_engine.py --checkpoint model.safetensors --out exports/m --precision int8

--checkpoint: a file (official .pt, state-dict .pt/.pth/.npz, our .safetensors), an official id,
or "tiny" (the tiny config with seeded random weights).

Exit codes, as `sync-sdk`: 0 done, 2 bad input, 3 model or runtime error (a missing package of the
`export` extra included).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from sync_sdk.errors import InputError, SyncSDKError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="file, official checkpoint id, or 'tiny'")
    p.add_argument("--out", required=True, type=Path, help="export directory (created)")
    p.add_argument("--precision", choices=("fp16", "fp32", "int8"), default=None,
                   help="variant to build and use by default: fp16 (default with TensorRT), fp32 "
                        "(default otherwise), int8 (ONNX Runtime CPU, dynamic quantisation)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                   help="auto: TensorRT engines when TensorRT and a GPU are present, else ONNX Runtime")
    p.add_argument("--variants", nargs="*", choices=("fp16", "int8"), default=[],
                   help="further ONNX precision variants to write (e.g. int8 beside fp32 to compare)")
    p.add_argument("--max-clips", type=int, default=4, help="largest batch of 14-segment clips an engine takes")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights for --checkpoint tiny")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto")
    p.add_argument("--triton-repo", type=Path, metavar="DIR",
                   help="also lay out a Triton Inference Server model repository in DIR (see sync_sdk/triton_repo.py)")
    p.add_argument("--triton-device", choices=("gpu", "cpu"), default="gpu",
                   help="instance kind of the Triton stage models (default gpu)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    try:
        from sync_sdk.export_onnx import export_model, resolve_backend

        precision = args.precision
        if precision is None:
            precision = "fp16" if resolve_backend(args.backend, "fp16")[0] == "tensorrt" else "fp32"
        export_model(args.checkpoint, args.out, precision=precision, seed=args.seed, backend=args.backend,
                     variants=args.variants, exporter=args.exporter, max_clips=args.max_clips, say=print)
        if args.triton_repo:
            from sync_sdk.serving.triton_repo import write_triton_repo
            info = write_triton_repo(args.out, args.triton_repo, precision=precision, device=args.triton_device,
                                     overwrite=True)
            print(f"wrote Triton models {', '.join(info['models'])} ({info['kind']}, {info['max_clips']} clips "
                  f"per batch) to {args.triton_repo}")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SyncSDKError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
