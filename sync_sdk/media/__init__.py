"""Media in: PyAV decoding at 25 fps / 16 kHz, probing, spans of decoded media, source normalisation.

Import the public names from here (`from sync_sdk.media import read_clip`); the modules behind them
are this package's own business.
"""
from sync_sdk.media.decode import (SHORT_SIDE, AVClip, MediaInfo, clip_from_arrays, iter_chunks, iter_clips,
                                   probe, read_audio_samples, read_clip, read_video_slots, require_streams)

__all__ = ["SHORT_SIDE", "AVClip", "MediaInfo", "clip_from_arrays", "iter_chunks", "iter_clips", "probe",
           "read_audio_samples", "read_clip", "read_video_slots", "require_streams"]
