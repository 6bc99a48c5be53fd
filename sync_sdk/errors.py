"""Typed errors of sync_sdk: every failure the SDK reports is a SyncSDKError.

Each subclass also derives from the closest built-in exception, so callers that catch
FileNotFoundError or ValueError keep working. Messages say what was found and what is needed.
"""


class SyncSDKError(Exception):
    """Base of every error raised by sync_sdk."""


class SyncSDKWarning(UserWarning):
    """Work went on, but something was wrong with the input (skipped packets, silence, ...)."""


# --- media / input -------------------------------------------------------------------------
class InputError(SyncSDKError, ValueError):
    """The input (file or arrays) cannot be turned into model inputs."""


class MediaNotFoundError(InputError, FileNotFoundError):
    """The media file does not exist."""


class MediaDecodeError(InputError):
    """The file is not media PyAV can open, or its streams cannot be decoded."""


class NoVideoStreamError(InputError):
    """The media has no video stream."""


class NoAudioStreamError(InputError):
    """The media has no audio stream."""


class ClipTooShortError(InputError):
    """The media is shorter than the requested window (plus offset)."""


class WindowOutOfRangeError(InputError):
    """The requested start time / offset puts the window outside the media."""


# --- checkpoints / models -------------------------------------------------------------------
class CheckpointError(SyncSDKError, ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint needs arbitrary unpickling, which is refused unless explicitly allowed."""


class DownloadError(SyncSDKError, OSError):
    """Downloading a checkpoint failed (network, HTTP status, size or md5 mismatch)."""


# --- backends / engines ---------------------------------------------------------------------
class BackendError(SyncSDKError, RuntimeError):
    """A backend cannot be created or run (missing package, no GPU, bad model directory)."""


class EngineMismatchError(BackendError):
    """An exported engine was built for another GPU / TensorRT version, or its hash differs."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


# --- training ---------------------------------------------------------------------------------
class TrainingError(SyncSDKError, RuntimeError):
    """A training run cannot go on (for example: stage 2 stayed at chance with every head draw)."""


# --- media / input (added with the media module) --------------------------------------------
class InvalidArrayError(InputError):
    """Frames or audio passed as arrays have an unusable shape, size, dtype or rate."""


class UnsupportedMediaError(MediaDecodeError):
    """The media declares a frame size, aspect ratio or audio rate outside the supported range; it is
    refused before decoding (it would take unbounded memory or time)."""


class CorruptMediaWarning(SyncSDKWarning):
    """Some packets could not be demuxed or decoded and were skipped; the rest was used."""


class SilentAudioWarning(SyncSDKWarning):
    """The audio of the requested window is silent: the offset prediction carries no information."""


class MissingDependencyError(SyncSDKError, ImportError):
    """An optional package is not installed; the message names the `pip install` that brings it."""
