"""Model name -> backend: resolve what `SyncEngine.from_pretrained` was given and pick a runtime.

A name is a bundled model (sync_sdk/models/<name>/: model.safetensors, an export directory with its
manifest; "<name>/synchronizability" is its synchronizability.safetensors), an official checkpoint id
(downloaded once), a checkpoint file, or an export directory (manifest.json). `auto` picks TensorRT on
a GPU with engines, else ONNX Runtime on an export (CUDA provider when present, else CPU), else torch
on a checkpoint. torch is imported only when the torch backend is chosen.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sync_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend, resolve_providers
from sync_sdk.backends.tensorrt_backend import TensorRTBackend
from sync_sdk.errors import BackendError, CheckpointError, DownloadError
from sync_sdk.runtime.views import SINGLE_VIEW, read_views
from sync_sdk.version import __version__
from sync_sdk.weights.checkpoint import DEFAULT_CHECKPOINT, OFFICIAL_CHECKPOINTS, download_checkpoint, load_checkpoint
from sync_sdk.weights.manifest import MANIFEST_NAME, read_manifest

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
BUNDLED_DEFAULT = "synthetic-tiny"
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".npz")
BUNDLED_CHECKPOINTS = {"sync": "model.safetensors", "synchronizability": "synchronizability.safetensors"}


@dataclass
class ModelSource:
    """What a name resolved to: an export directory and/or a checkpoint file, and the model id."""

    model_id: str
    kind: str  # "bundled" | "official" | "checkpoint" | "export"
    export_dir: Path | None = None
    checkpoint: Path | None = None

    def shift_views(self) -> tuple[float, ...]:
        """The shift views its folder's inference.json asks for (views.py); (0.0,) without one."""
        if self.kind == "bundled":
            return read_views(MODELS_DIR / self.model_id.partition("/")[0])
        return read_views(self.export_dir, self.checkpoint.parent if self.checkpoint else None)


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package; "<name>/synchronizability" where the bundle
    also holds a synchronizability.safetensors."""
    if not MODELS_DIR.is_dir():
        return []
    names = []
    for d in sorted(p for p in MODELS_DIR.iterdir() if p.is_dir()):
        names.append(d.name)
        if (d / BUNDLED_CHECKPOINTS["synchronizability"]).is_file():
            names.append(f"{d.name}/synchronizability")
    return names


def _find_export(directory: Path, variant: str | None = None) -> Path | None:
    """The export directory (manifest.json) in `directory` or one level below, of `variant` if given."""
    found = ([directory] if (directory / MANIFEST_NAME).is_file() else []) + \
        sorted(p.parent for p in directory.glob(f"*/{MANIFEST_NAME}"))
    for export in found:
        if variant is None or read_manifest(export).config.variant == variant:
            return export
    return None


def _find_checkpoint(directory: Path) -> Path | None:
    for suffix in CHECKPOINT_SUFFIXES:
        found = sorted(directory.glob(f"*{suffix}"))
        if found:
            return found[0]
    return None


def _bundled(name: str) -> ModelSource:
    """synthetic-tiny (the offset model) or synthetic-tiny/synchronizability, from the bundle."""
    base, _, sub = name.partition("/")
    variant = sub or "sync"
    d = MODELS_DIR / base
    ckpt = d / BUNDLED_CHECKPOINTS[variant]
    return ModelSource(name, "bundled", _find_export(d, variant), ckpt if ckpt.is_file() else None)


def resolve_model(name_or_path: str | Path | None) -> ModelSource:
    """Resolve a model name (see module doc); None = the official AudioSet sync checkpoint."""
    name = DEFAULT_CHECKPOINT if name_or_path is None else str(name_or_path)
    if name in bundled_models():
        return _bundled(name)
    if name in OFFICIAL_CHECKPOINTS:
        try:
            path = download_checkpoint(name)
        except DownloadError as e:
            hint = "" if BUNDLED_DEFAULT in str(e) else \
                f"; to try the SDK offline use SyncEngine.from_pretrained({BUNDLED_DEFAULT!r})"
            raise DownloadError(f"checkpoint {name} is not cached and could not be downloaded: {e}{hint}") from e
        return ModelSource(name, "official", None, Path(path))
    path = Path(name).expanduser()
    if path.is_dir():
        export, ckpt = _find_export(path), _find_checkpoint(path)
        if export is None and ckpt is None:
            raise CheckpointError(f"{path}: directory holds neither {MANIFEST_NAME} (an export from "
                                  f"export/build_engine.py) nor a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
        model_id = read_manifest(export).model_id if export else path.name
        return ModelSource(model_id, "export" if export else "checkpoint", export, ckpt)
    if path.is_file():
        return ModelSource(path.stem, "checkpoint", None, path)
    known = bundled_models() + list(OFFICIAL_CHECKPOINTS)
    raise CheckpointError(f"model {name!r} not found: expected a bundled model or official id "
                          f"({', '.join(known)}), a checkpoint file or an export directory")


def model_shift_views(name_or_path: str | Path | None) -> tuple[float, ...]:
    """The shift views a model asks for (its folder's inference.json), without loading it; an official
    checkpoint id answers with one view and is not downloaded for it."""
    if name_or_path is None or (str(name_or_path) in OFFICIAL_CHECKPOINTS and str(name_or_path) not in bundled_models()):
        return SINGLE_VIEW
    return resolve_model(name_or_path).shift_views()


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _ort_providers(device: str) -> list[str] | None:
    if device == "auto":
        return None
    if device == "cpu":
        return ["cpu"]
    if device.startswith("cuda"):
        return ["cuda"]
    raise BackendError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _gpu_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0


def _precision(precision: str) -> str | None:
    return None if precision == "auto" else precision


def load_backend(name_or_path=None, backend: str = "auto", device: str = "auto", precision: str = "auto",
                 threads: int | None = None, allow_unsafe: bool = False, max_checkpoint_bytes: int | None = None):
    """(backend object, details dict) for a model name; details say what was picked and why.
    max_checkpoint_bytes: cap on a checkpoint's tensor data (weights/limits.py; default 4 GiB)."""
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {BACKENDS}, got {backend!r}")
    src = resolve_model(name_or_path)
    details = {"model_id": src.model_id, "source": src.kind,
               "export_dir": str(src.export_dir) if src.export_dir else None,
               "checkpoint": str(src.checkpoint) if src.checkpoint else None,
               "shift_views_sec": list(src.shift_views()), "notes": []}
    notes = details["notes"]
    tried: list[str] = []

    if backend in ("auto", "tensorrt") and src.export_dir and device != "cpu":
        if backend == "tensorrt" or read_manifest(src.export_dir).precisions("tensorrt"):
            try:
                be = TensorRTBackend.from_dir(src.export_dir, precision=_precision(precision),
                                              device=_gpu_index(device))
                notes.append("TensorRT engines of the export run on the GPU")
                return be, details
            except BackendError as e:
                if backend == "tensorrt":
                    raise
                tried.append(f"tensorrt: {e}")
    if backend == "tensorrt":
        raise BackendError(f"{src.model_id}: TensorRT needs an export directory with engines "
                           "(python export/build_engine.py --backend tensorrt) and a GPU")

    if backend in ("auto", "onnxruntime") and src.export_dir:
        providers = _ort_providers(device)
        ort_precision = _precision(precision)
        if ort_precision is None and resolve_providers(providers)[0] == "CPUExecutionProvider":
            ort_precision = "fp32"  # fp16 graphs are for GPU providers; int8 is opt-in
        be = OnnxRuntimeBackend.from_dir(src.export_dir, providers=providers, threads=threads,
                                         precision=ort_precision)
        notes += [f"skipped {t}" for t in tried]
        notes.append(f"ONNX Runtime on {be.providers[0]}")
        return be, details
    if backend == "onnxruntime":
        raise BackendError(f"{src.model_id}: ONNX Runtime needs an export directory; make one with "
                           "`sync-sdk export` (or python export/build_engine.py)")

    if src.checkpoint is None:
        raise BackendError(f"{src.model_id}: no checkpoint for the torch backend")
    if not torch_available():
        raise BackendError(f"{src.model_id} is a checkpoint; running it needs torch (pip install "
                           "'sync-sdk[torch]'), or export it once (`sync-sdk export`) and use ONNX Runtime")
    from sync_sdk.model import build_model, load_weights
    ck = load_checkpoint(src.checkpoint, allow_unsafe=allow_unsafe, max_checkpoint_bytes=max_checkpoint_bytes)
    import torch
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch_device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = load_weights(build_model(ck.config), ck.state_dict)
    if torch_device.startswith("cuda"):  # the GPU fast path without an export: FP16 + CUDA graphs
        from sync_sdk.backends.torch_cuda_backend import TorchCudaBackend
        be = TorchCudaBackend(model, device=torch_device, precision=_precision(precision) or "fp16")
    else:
        if precision not in ("auto", "fp32"):
            raise BackendError(f"the torch backend runs fp32 on the CPU (asked for {precision}); export the "
                               "model for fp16/int8, or run on a GPU")
        from sync_sdk.backends.torch_backend import TorchBackend
        be = TorchBackend(model, device=torch_device)
    notes += [f"skipped {t}" for t in tried]
    if backend == "auto":
        notes.append("no export found, running the PyTorch reference; exporting is faster: "
                     f"`sync-sdk export {src.checkpoint} OUT_DIR` then from_pretrained(OUT_DIR)")
    return be, details


def versions() -> dict:
    """Installed versions of the SDK and its runtimes (None = not installed); imports nothing heavy."""
    out = {"sync_sdk": __version__}
    for dist in ("numpy", "av", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "cupy-cuda12x",
                 "safetensors", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
