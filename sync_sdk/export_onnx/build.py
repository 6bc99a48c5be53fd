"""Checkpoint -> export directory: three ONNX graphs, precision variants, engines, manifest.json.

    manifest = export_model(model, "out/", model_id="tiny-random-seed0", precision="int8")

Files: `{stage}.onnx` (fp32, always), `{stage}.fp16.onnx` / `{stage}.int8.onnx` (the variant
asked for), `{stage}.{precision}.engine` + `timing.cache` (TensorRT), `manifest.json`
(see sync_sdk/manifest.py for its layout).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from sync_sdk.config import ModelConfig
from sync_sdk.errors import BackendError
from sync_sdk.export_onnx.graphs import OPSET, export_stage, quiet_exporters, stage_io
from sync_sdk.export_onnx.hygiene import hygiene_problems
from sync_sdk.export_onnx.precision import to_fp16, to_int8
from sync_sdk.export_onnx.tensorrt_build import build_engine, profiles, tensorrt_status
from sync_sdk.model import build_model, load_weights
from sync_sdk.version import __version__
from sync_sdk.weights.checkpoint import OFFICIAL_CHECKPOINTS, download_checkpoint, load_checkpoint
from sync_sdk.weights.manifest import FORMAT, INFERENCE_FILE, MANIFEST_NAME, PRECISIONS, STAGES, file_name, sha256_file

log = logging.getLogger(__name__)
BACKENDS = ("auto", "onnxruntime", "tensorrt")
TIMING_CACHE = "timing.cache"
_TOKEN_NAMES = ("cls_token", "distillation_token", "position_embeddings", "pos_embed", "temp_embed",
                "OFF_tok", "MOD_tok", "pos_emb")


def random_state_dict(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random weights with the tiny reference's recipe (tiny_seed0/config.json "init").

    Tokens / positional tables 0.5*N(0,1); matrices N(0,1)/sqrt(fan_in); LayerNorm gains
    1+0.1*N(0,1); biases 0.1*N(0,1). NumPy's generator, in state-dict order.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in model.state_dict().items():
        shape = tuple(t.shape)
        z = rng.standard_normal(shape).astype(np.float32)
        if name.rsplit(".", 1)[-1] in _TOKEN_NAMES:
            out[name] = 0.5 * z
        elif len(shape) >= 2:
            out[name] = z / np.float32(np.sqrt(np.prod(shape[1:])))
        elif name.endswith("weight"):
            out[name] = 1.0 + 0.1 * z
        else:
            out[name] = 0.1 * z
    return out


def load_model(checkpoint: str, seed: int = 0):
    """(model, model_id) for "tiny" (seeded random weights), an official checkpoint id, or a file."""
    if checkpoint == "tiny":
        model = build_model("tiny")
        return load_weights(model, random_state_dict(model, seed)), f"tiny-random-seed{seed}"
    if checkpoint in OFFICIAL_CHECKPOINTS:
        ckpt, model_id = load_checkpoint(download_checkpoint(checkpoint)), checkpoint
    else:
        ckpt, model_id = load_checkpoint(checkpoint), Path(checkpoint).stem
    return load_weights(build_model(ckpt.config), ckpt.state_dict), model_id


def resolve_backend(backend: str, precision: str) -> tuple[str, str]:
    """(backend to build, a sentence saying why) for "auto" | "onnxruntime" | "tensorrt"."""
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onnxruntime":
        return backend, "building the ONNX Runtime variant as asked"
    if precision == "int8":
        if backend == "tensorrt":
            raise BackendError("int8 is an ONNX Runtime CPU variant (dynamic quantisation); TensorRT "
                               "engines are built in fp16 or fp32")
        return "onnxruntime", "int8 is an ONNX Runtime variant: building the ONNX Runtime variant"
    ok, why = tensorrt_status()
    if backend == "tensorrt" and not ok:
        raise BackendError(f"--backend tensorrt needs TensorRT and an NVIDIA GPU: {why}. Use --backend "
                           "onnxruntime (or auto) on this machine")
    if ok:
        return "tensorrt", f"building TensorRT engines: {why}"
    return "onnxruntime", f"TensorRT unavailable ({why}): building the ONNX Runtime variant instead"


def _clear(out_dir: Path) -> None:
    """Remove files of an earlier export in out_dir (only names this exporter writes)."""
    for stage in STAGES:
        for p in list(out_dir.glob(f"{stage}.onnx")) + list(out_dir.glob(f"{stage}.*.onnx")) + \
                list(out_dir.glob(f"{stage}.*.engine")):
            p.unlink()
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    (out_dir / INFERENCE_FILE).unlink(missing_ok=True)


def export_model(model, out_dir: str | Path, model_id: str | None = None, precision: str = "fp32",
                 backend: str = "onnxruntime", variants: Sequence[str] = (), opset: int = OPSET,
                 exporter: str = "auto", max_clips: int = 4, seed: int = 0,
                 say: Callable[[str], None] = log.info) -> dict:
    """Export `model` into `out_dir`; returns the manifest written there.

    model: a Synchformer, or a checkpoint for `load_model` (file, official id, "tiny"); a checkpoint
    file's folder's inference.json (how the model is run: its shift views) is carried into out_dir.
    precision: "fp32" | "fp16" | "int8" (fp32 graphs are always written; this adds the variant,
    the backends' default). variants: further ONNX precision variants to write (e.g. ("int8",)).
    backend: "onnxruntime" | "tensorrt" | "auto".
    """
    for p in (precision, *variants):
        if p not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {p!r}")
    inference = None
    if isinstance(model, (str, os.PathLike)):
        inference = Path(model).parent / INFERENCE_FILE
        model, loaded_id = load_model(str(model), seed=seed)
        model_id = model_id or loaded_id
    backend, why = resolve_backend(backend, precision)
    say(why)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    config: ModelConfig = model.config
    io = stage_io(config)
    files, used = {}, set()
    for stage in STAGES:
        path = out / file_name(stage, "fp32")
        used.add(export_stage(model, stage, path, opset=opset, exporter=exporter))
        for problem in hygiene_problems(onnx.load(str(path), load_external_data=False)):
            say(f"warning: {path.name}: {problem}")
        files[path.name] = {"stage": stage, "kind": "onnx", "precision": "fp32"}
        for p in dict.fromkeys((precision, *variants)):
            if p != "fp32":
                variant = out / file_name(stage, p)
                with quiet_exporters():
                    (to_fp16 if p == "fp16" else to_int8)(path, variant, fp32_tail=stage == "head")
                files[variant.name] = {"stage": stage, "kind": "onnx", "precision": p}
        say(f"{stage}: wrote {', '.join(n for n, e in files.items() if e['stage'] == stage)}")
    if backend == "tensorrt":
        cache = out / TIMING_CACHE
        for stage in STAGES:
            engine = out / file_name(stage, precision, "tensorrt")
            ranges = profiles(stage, config.n_segments, max_clips)
            info = build_engine(out / file_name(stage, precision), engine, io[stage], ranges, cache)
            files[engine.name] = {"stage": stage, "kind": "tensorrt", "precision": precision, **info}
            say(f"{stage}: built {engine.name}")
        files[TIMING_CACHE] = {"stage": None, "kind": "timing_cache", "precision": None}
    if inference is not None and inference.is_file():
        shutil.copyfile(inference, out / INFERENCE_FILE)
        files[INFERENCE_FILE] = {"stage": None, "kind": "inference", "precision": None}
        say(f"carried {inference} (how the model is run)")
    for name, entry in files.items():
        entry.update(sha256=sha256_file(out / name), bytes=(out / name).stat().st_size)
    manifest = {
        "format": FORMAT, "model_id": model_id or "model", "config": config.to_dict(), "precision": precision,
        "opset": opset, "exporter": "+".join(sorted(used)), "sdk_version": __version__,
        "stages": io, "files": files,
    }
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST_NAME)
    say(f"wrote {out / MANIFEST_NAME}")
    return manifest
