"""sync_sdk: fast inference for Synchformer audio-visual synchronisation."""
import importlib

from sync_sdk.config import ModelConfig
from sync_sdk.errors import (
    BackendError,
    CheckpointError,
    ClipTooShortError,
    DownloadError,
    EngineMismatchError,
    InputError,
    MediaDecodeError,
    MediaNotFoundError,
    NoAudioStreamError,
    NoVideoStreamError,
    SyncSDKError,
    SyncSDKWarning,
    UnsafeCheckpointError,
    WindowOutOfRangeError,
)
from sync_sdk.version import __version__

_LAZY = {"SyncEngine": "engine", "SyncResult": "results", "Timeline": "results", "SyncStream": "runtime.stream",
         "visual_inputs": "inputs.layouts"}


def __getattr__(name: str):
    """SyncEngine, SyncResult, Timeline, SyncStream, visual_inputs are imported on first use (no torch, no
    PyAV at import)."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SyncEngine", "SyncResult", "SyncStream", "Timeline", "visual_inputs",
    "ModelConfig", "__version__", "SyncSDKError", "SyncSDKWarning", "InputError", "MediaNotFoundError",
    "MediaDecodeError", "NoVideoStreamError", "NoAudioStreamError", "ClipTooShortError",
    "WindowOutOfRangeError", "CheckpointError", "UnsafeCheckpointError", "DownloadError",
    "BackendError", "EngineMismatchError",
]
