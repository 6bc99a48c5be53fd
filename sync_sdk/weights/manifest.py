"""The export directory's `manifest.json`: read it and verify what it promises (no torch).

Layout written by `export/build_engine.py` (format 1):

    {"format": 1, "model_id": str, "config": ModelConfig dict, "precision": "fp32"|"fp16"|"int8",
     "opset": int, "exporter": str, "sdk_version": str,
     "stages": {stage: {"inputs": [{"name", "shape", "dtype"}], "outputs": [...]}},
     "files": {file name: {"stage", "kind": "onnx"|"tensorrt"|"timing_cache"|"inference", "precision",
                           "sha256", "bytes", and for engines "tensorrt_version",
                           "compute_capability" ("9.0"), "gpu", "profile"}}}

Shapes use a string for a dynamic axis ("N" segments for the encoders, "B" clips for the head).
Every file is checked against its sha256 before a backend loads it; an engine is also checked
against the TensorRT version and GPU compute capability it was built for (EngineMismatchError).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from sync_sdk.config import ModelConfig
from sync_sdk.errors import BackendError, EngineMismatchError

MANIFEST_NAME = "manifest.json"
INFERENCE_FILE = "inference.json"  # how a model folder asks to be run: {"shift_views_sec": [..]}
FORMAT = 1
STAGES = ("audio_encoder", "visual_encoder", "head")
PRECISIONS = ("fp32", "fp16", "int8")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_name(stage: str, precision: str, kind: str = "onnx") -> str:
    """`visual_encoder.onnx` (fp32), `visual_encoder.fp16.onnx`, `head.fp16.engine`, ..."""
    suffix = "" if precision == "fp32" and kind == "onnx" else f".{precision}"
    return f"{stage}{suffix}.{'engine' if kind == 'tensorrt' else 'onnx'}"


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest and the directory it describes."""

    directory: Path
    data: dict

    @property
    def model_id(self) -> str:
        return self.data["model_id"]

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.data["config"])

    @property
    def precision(self) -> str:
        """The precision the export was built for (the backends' default)."""
        return self.data["precision"]

    def stage_io(self, stage: str) -> dict:
        """{"inputs": [...], "outputs": [...]} of one stage, each {"name", "shape", "dtype"}."""
        return self.data["stages"][stage]

    def precisions(self, kind: str = "onnx") -> list[str]:
        """Precisions for which every stage has a file of `kind`."""
        have = {(e["stage"], e["precision"]) for e in self.data["files"].values() if e["kind"] == kind}
        return [p for p in PRECISIONS if all((s, p) in have for s in STAGES)]

    def stage_file(self, stage: str, precision: str, kind: str = "onnx") -> tuple[Path, dict]:
        """Path and entry of a stage's file; BackendError when the export has none."""
        name = file_name(stage, precision, kind)
        entry = self.data["files"].get(name)
        if entry is None:
            raise BackendError(
                f"{self.directory}: no {precision} {kind} file for {stage} ({name}); this export has "
                f"{kind} precisions {self.precisions(kind) or 'none'}")
        return self.directory / name, entry

    def verified_file(self, stage: str, precision: str, kind: str = "onnx") -> tuple[Path, dict]:
        """Like `stage_file`, after checking the file's size and sha256 (EngineMismatchError)."""
        path, entry = self.stage_file(stage, precision, kind)
        verify_file(path, entry)
        return path, entry


def read_manifest(export_dir: str | Path) -> Manifest:
    """Parse `export_dir/manifest.json`; BackendError when missing, unreadable or of another format."""
    directory = Path(export_dir)
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise BackendError(f"{directory}: no {MANIFEST_NAME}; export a model there with "
                           "`python export/build_engine.py --checkpoint ... --out DIR`") from e
    except (OSError, json.JSONDecodeError) as e:
        raise BackendError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise BackendError(f"{path}: manifest format {got!r}, this sync_sdk reads format {FORMAT}")
    missing = [k for k in ("model_id", "config", "precision", "stages", "files") if k not in data]
    if missing:
        raise BackendError(f"{path}: manifest lacks {missing}")
    return Manifest(directory, data)


def verify_file(path: Path, entry: dict) -> None:
    """Raise EngineMismatchError unless `path` exists with the manifest's size and sha256."""
    if not path.is_file():
        raise EngineMismatchError(f"{path}: listed in the manifest but missing")
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        raise EngineMismatchError(f"{path}: {size} bytes, the manifest says {entry['bytes']}; "
                                  "the file was changed or truncated after export")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise EngineMismatchError(f"{path}: sha256 {digest[:16]}..., the manifest says "
                                  f"{entry['sha256'][:16]}...; the file was changed after export")


def check_engine(entry: dict, tensorrt_version: str, compute_capability: str, name: str = "engine") -> None:
    """Raise EngineMismatchError unless the engine was built by this TensorRT for this GPU generation.

    TensorRT engines are neither portable across TensorRT versions nor across compute
    capabilities; rebuild them with `export/build_engine.py` on the target machine.
    """
    built = (entry.get("tensorrt_version"), entry.get("compute_capability"))
    if built[0] != tensorrt_version:
        raise EngineMismatchError(f"{name}: built with TensorRT {built[0]}, this machine has TensorRT "
                                  f"{tensorrt_version}; rebuild it with export/build_engine.py here")
    if built[1] != compute_capability:
        raise EngineMismatchError(
            f"{name}: built for GPU compute capability {built[1]} ({entry.get('gpu', '?')}), this GPU "
            f"has {compute_capability}; rebuild it with export/build_engine.py on this GPU")


def gpu_compute_capability(device: int = 0) -> tuple[str, str]:
    """(compute capability "major.minor", GPU name) of a CUDA device, through CuPy."""
    try:
        import cupy
    except ImportError as e:
        raise BackendError("reading the GPU's compute capability needs CuPy (pip install "
                           "'sync-sdk[gpu]')") from e
    try:
        props = cupy.cuda.runtime.getDeviceProperties(device)
    except cupy.cuda.runtime.CUDARuntimeError as e:
        raise BackendError(f"no usable CUDA device {device}: {e}") from e
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return f"{props['major']}.{props['minor']}", name
