"""sync_sdk: fast inference for Synchformer audio-visual synchronisation."""
from .config import ModelConfig
from .errors import (BackendError, CheckpointError, ClipTooShortError, DownloadError,
                     EngineMismatchError, InputError, MediaDecodeError, MediaNotFoundError,
                     NoAudioStreamError, NoVideoStreamError, SyncSDKError, SyncSDKWarning,
                     UnsafeCheckpointError, WindowOutOfRangeError)
from .version import __version__

__all__ = [
    "ModelConfig", "__version__", "SyncSDKError", "SyncSDKWarning", "InputError", "MediaNotFoundError",
    "MediaDecodeError", "NoVideoStreamError", "NoAudioStreamError", "ClipTooShortError",
    "WindowOutOfRangeError", "CheckpointError", "UnsafeCheckpointError", "DownloadError",
    "BackendError", "EngineMismatchError",
]
