"""Lay out a Triton Inference Server model repository from an export directory (no torch, no Triton).

    write_triton_repo("exports/audioset", "triton_models")      # or: export/build_engine.py --triton-repo DIR
    tritonserver --model-repository triton_models

The repository needs a full Triton install (its onnxruntime or tensorrt backend and the python one, e.g.
NGC's tritonserver image). The tritonserver in the nvidia-pytriton wheel has the python backend only, so
it cannot load this repository; `sync-sdk serve` (triton_server.py) runs the SDK itself in that server.

Four models (NAME = `name`, default "synchformer"):

    NAME_audio_encoder/   onnxruntime_onnx (1/model.onnx) or tensorrt_plan (1/model.plan)
                          aud [1,128,66] -> afeat [6,a_dim]; batch axis = segments, dynamic batching
    NAME_visual_encoder/  vid [16,3,224,224] -> vfeat [8,v_dim]; batch axis = segments, dynamic batching
    NAME_head/            vfeat [S*8,v_dim], afeat [S*6,a_dim] -> logits [C]; batch axis = clips
    NAME/                 Python backend BLS model (1/model.py = sync_sdk/triton_bls.py) that joins them:
                          vid [S,16,3,224,224], aud [S,1,128,66] -> logits [C], probs [C]
                          (+ offset_sec [1], class_index [1] for an offset model); batch axis = clips

A BLS model rather than an ensemble: an ensemble cannot turn a clip's S encoder outputs into one
head row (the batch axis changes meaning from segments to clips), and the BLS model sends every
clip's segments to the encoders at once so their dynamic batchers can merge clips.
TensorRT engines are used when the export holds them for the precision (kind "auto"); they only
load on the GPU generation and TensorRT version that built them (see the manifest). All tensors are
FP32 (the fp16/int8 variants keep float32 inputs and outputs).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from sync_sdk.errors import BackendError, InputError
from sync_sdk.geometry import (
    AUDIO_TOKENS_PER_SEGMENT,
    CROP_SIZE,
    N_MELS,
    OFFSET_GRID_SEC,
    SEG_FRAMES,
    SPEC_FRAMES,
    VIDEO_TOKENS_PER_SEGMENT,
)
from sync_sdk.weights.manifest import STAGES, read_manifest

KINDS = ("auto", "onnx", "tensorrt")
PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
BLS_SOURCE = Path(__file__).with_name("triton_bls.py")


@dataclass(frozen=True)
class Sym:
    """A protobuf enum value, written without quotes (TYPE_FP32, KIND_GPU)."""

    value: str


def to_pbtxt(fields: dict, indent: int = 0) -> str:
    """Protobuf text format of a dict: nested dicts are messages, lists of dicts repeated messages,
    lists of scalars repeated scalars, {"map": {k: v}} map fields (as key/value entries)."""
    pad = "  " * indent
    lines = []
    for key, value in fields.items():
        if isinstance(value, dict) and set(value) == {"map"}:
            for k, v in value["map"].items():
                lines.append(f"{pad}{key} {{\n{pad}  key: {_scalar(k)}\n{pad}  value {{\n"
                             f"{to_pbtxt(v, indent + 2)}{pad}  }}\n{pad}}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join(f"{pad}  {{\n{to_pbtxt(v, indent + 2)}{pad}  }}" for v in value)
            lines.append(f"{pad}{key} [\n{items}\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(v) -> str:
    if isinstance(v, Sym):
        return v.value
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def _tensor(name: str, dims: list[int]) -> dict:
    return {"name": name, "data_type": Sym("TYPE_FP32"), "dims": dims}


def _instances(device: str, count: int, profile: int | None = None) -> list[dict]:
    group = {"count": count, "kind": Sym("KIND_GPU" if device == "gpu" else "KIND_CPU")}
    if profile is not None:
        group["profile"] = [str(profile)]
    return [group]


def _batch_limits(manifest, kind: str, precision: str, max_clips: int | None) -> tuple[int, dict]:
    """(clips per head batch, {stage: TensorRT profile index or None}) from the engines' profiles."""
    if kind != "tensorrt":
        return max_clips or 4, {s: None for s in STAGES}
    n = manifest.config.n_segments
    chosen, clips = {}, []
    for stage in STAGES:
        _, entry = manifest.stage_file(stage, precision, "tensorrt")
        profiles = entry.get("profiles") or [[1, 1, 1]]
        best = max(range(len(profiles)), key=lambda i: profiles[i][2])
        chosen[stage] = best
        clips.append(profiles[best][2] if stage == "head" else profiles[best][2] // n)
    fits = min(clips)
    if max_clips is not None and max_clips > fits:
        raise InputError(f"max_clips={max_clips}, but the TensorRT engines take at most {fits} clips "
                         "per batch; rebuild them with export/build_engine.py --max-clips")
    return max_clips or fits, chosen


def stage_configs(manifest, kind: str, name: str, max_clips: int, device: str, instances: int,
                  queue_delay_us: int, profiles: dict) -> dict[str, dict]:
    """Model name -> config dict (see `to_pbtxt`) of the three stage models and the BLS model."""
    c = manifest.config
    s = c.n_segments
    platform = PLATFORMS[kind][0]
    batching = {"max_queue_delay_microseconds": queue_delay_us}
    io = {
        "audio_encoder": ([_tensor("aud", [1, N_MELS, SPEC_FRAMES])],
                          [_tensor("afeat", [AUDIO_TOKENS_PER_SEGMENT, c.a_dim])], s * max_clips),
        "visual_encoder": ([_tensor("vid", [SEG_FRAMES, 3, CROP_SIZE, CROP_SIZE])],
                           [_tensor("vfeat", [VIDEO_TOKENS_PER_SEGMENT, c.v_dim])], s * max_clips),
        "head": ([_tensor("vfeat", [s * VIDEO_TOKENS_PER_SEGMENT, c.v_dim]),
                  _tensor("afeat", [s * AUDIO_TOKENS_PER_SEGMENT, c.a_dim])],
                 [_tensor("logits", [c.num_classes])], max_clips),
    }
    configs = {}
    for stage, (inputs, outputs, max_batch) in io.items():
        configs[f"{name}_{stage}"] = {
            "name": f"{name}_{stage}", "platform": platform, "max_batch_size": max_batch,
            "input": inputs, "output": outputs, "dynamic_batching": batching,
            "instance_group": _instances(device, instances, profiles[stage]),
        }
    outputs = [_tensor("logits", [c.num_classes]), _tensor("probs", [c.num_classes])]
    if c.variant == "sync":
        outputs += [_tensor("offset_sec", [1]), {**_tensor("class_index", [1]), "data_type": Sym("TYPE_INT32")}]
    params = {"audio_model": f"{name}_audio_encoder", "visual_model": f"{name}_visual_encoder",
              "head_model": f"{name}_head", "n_segments": str(s),
              "offset_grid_sec": json.dumps([round(float(x), 1) for x in OFFSET_GRID_SEC]),
              "model_id": manifest.model_id, "variant": c.variant, "FORCE_CPU_ONLY_INPUT_TENSORS": "yes"}
    configs[name] = {
        "name": name, "backend": "python", "max_batch_size": max_clips,
        "input": [_tensor("vid", [s, SEG_FRAMES, 3, CROP_SIZE, CROP_SIZE]),
                  _tensor("aud", [s, 1, N_MELS, SPEC_FRAMES])],
        "output": outputs, "dynamic_batching": batching,
        "instance_group": _instances("cpu", instances),
        "parameters": {"map": {k: {"string_value": v} for k, v in params.items()}},
    }
    return configs


def write_triton_repo(export_dir: str | Path, repo_dir: str | Path, *, name: str = "synchformer",
                      precision: str | None = None, kind: str = "auto", device: str = "gpu",
                      max_clips: int | None = None, instances: int = 1, queue_delay_us: int = 2000,
                      overwrite: bool = False) -> dict:
    """Write the four models of `export_dir` into the Triton model repository `repo_dir`.

    precision: the export's variant (default: the manifest's). kind: "auto" (TensorRT engines when the
    export has them for that precision and device is "gpu", else ONNX) | "onnx" | "tensorrt". device: "gpu" | "cpu"
    (instance kind of the stage models; the BLS model runs on CPU). max_clips: clips per batch
    (default 4 for ONNX, what the engines' profiles take for TensorRT); encoders batch
    n_segments x max_clips segments. instances: model instances per stage. queue_delay_us: dynamic
    batching delay. overwrite: replace this model's four folders if present (other models in the
    repository are left alone). Model files are checked against the manifest's sha256 and copied.
    Returns {"models": [...], "kind", "precision", "max_clips", "repo"}.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    if device not in ("gpu", "cpu"):
        raise InputError(f"device must be 'gpu' or 'cpu', got {device!r}")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"model name must be letters, digits, '_' or '-', got {name!r}")
    manifest = read_manifest(export_dir)
    precision = precision or manifest.precision
    if kind == "auto":
        kind = "tensorrt" if device == "gpu" and precision in manifest.precisions("tensorrt") else "onnx"
    if kind == "tensorrt" and device == "cpu":
        raise InputError("TensorRT plans run on GPU instances only; use kind='onnx' for device='cpu'")
    files = {stage: manifest.verified_file(stage, precision, "tensorrt" if kind == "tensorrt" else "onnx")[0]
             for stage in STAGES}
    clips, profiles = _batch_limits(manifest, kind, precision, max_clips)
    configs = stage_configs(manifest, kind, name, clips, device, instances, queue_delay_us, profiles)

    repo = Path(repo_dir)
    clash = [m for m in configs if (repo / m).exists()]
    if clash and not overwrite:
        raise BackendError(f"{repo}: models {clash} already exist; pass overwrite=True (--overwrite) "
                           "to replace them")
    for model, config in configs.items():
        folder = repo / model
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(to_pbtxt(config))
        stage = model[len(name) + 1:] if model != name else None
        if stage is None:
            shutil.copyfile(BLS_SOURCE, folder / "1" / "model.py")
        else:
            shutil.copyfile(files[stage], folder / "1" / PLATFORMS[kind][1])
    return {"repo": str(repo), "models": list(configs), "kind": kind, "precision": precision,
            "max_clips": clips}
