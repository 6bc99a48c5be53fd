"""Media in: PyAV decoding at 25 fps / 16 kHz, probing, pixel and audio resampling, spans of decoded
media, source normalisation.

Import the public names from here (`from sync_sdk.media import read_clip`); the modules behind them
are this package's own business: container.py (opening, streams, probing, the decode loop), video.py
and audio.py (the stream decoders and their options), decode.py (AVClips from files and arrays),
resize.py and resample.py (the layouts' pixel resize and audio resampler).
"""
from sync_sdk.media.audio import read_audio, read_audio_samples
from sync_sdk.media.container import MediaInfo, probe, require_streams
from sync_sdk.media.decode import AVClip, clip_from_arrays, iter_chunks, iter_clips, read_clip
from sync_sdk.media.resample import load_audio_16k, resample, sinc_kernel
from sync_sdk.media.resize import bicubic_aa_taps, centre_crop, resize_short_crop, resized_size
from sync_sdk.media.video import FRAME_SIZES, SHORT_SIDE, read_video_crops, read_video_slots

__all__ = ["FRAME_SIZES", "SHORT_SIDE", "AVClip", "MediaInfo", "bicubic_aa_taps", "centre_crop",
           "clip_from_arrays", "iter_chunks", "iter_clips", "load_audio_16k", "probe", "read_audio",
           "read_audio_samples", "read_clip", "read_video_crops", "read_video_slots", "require_streams",
           "resample", "resize_short_crop", "resized_size", "sinc_kernel"]
