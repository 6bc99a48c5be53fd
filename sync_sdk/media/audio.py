"""The audio stream as mono float32: at 16 kHz placed on media time, or the whole track at its own rate.

16 kHz (`read_audio_samples`, the sync model's input): av.AudioResampler(format="fltp", layout kept,
rate=16000), then the mean over channels (the official mono: read_video, then mean(dim=0)). PyAV's own
mono downmix, 0.707 (L + R), is +3 dB and is not used. Samples are placed by the first frame's timestamp;
gaps (skipped packets) are filled with zeros so audio stays aligned with video. Every decode starts
with a seek, even at 0: after a seek the MP4 demuxer skips the AAC priming packet (pts -1024) exactly
as read_video does (decoding from the first packet instead changes the first 576 samples). Seeks decode
only the asked range plus a short pre-roll.

Native rate (`read_audio`, the av-benchmark reader, resampled to 16 kHz by resample.py): every decoded
sample from the first packet (no seek, no placement by timestamps), converted to float and averaged
over channels.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from sync_sdk.errors import MediaDecodeError, NoAudioStreamError, UnsupportedMediaError
from sync_sdk.geometry import SAMPLE_RATE
from sync_sdk.media.container import Decoder, audio_stream, round_half_away

_AUDIO_PREROLL_SEC = 0.25  # decoder warm-up (AAC/MP3/Opus overlap) and resampler history
_GAP_SEC = 0.01  # audio timestamp jumps larger than this are treated as gaps
RATES = (1_000, 1_000_000)  # sample rates (Hz) accepted from a file: resampling to 16 kHz scales by 1/62.5..16
_ZEROS = 1 << 20  # samples of silence handed out at a time for a gap (bounds memory on absurd timestamp jumps)


def read_audio_samples(path: str | os.PathLike, first: int, stop: int | None) -> np.ndarray:
    """Mono 16-kHz samples [first, stop) of a file's media time (to the end if stop is None): (N,) float32."""
    with AudioDecoder(path) as dec:
        return Samples(dec.samples(first, stop)).take(None if stop is None else stop - first)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Whole audio track of a file at its own rate: (float32 (N,) mean over channels, rate in Hz).
    Raises MediaDecodeError when the stream holds no samples."""
    with AudioDecoder(path) as dec:
        wave = dec.native()
        rate = dec.stream.codec_context.sample_rate or dec.stream.rate
    if not len(wave):
        raise MediaDecodeError(f"{path}: the audio stream holds no samples")
    return wave, int(rate)


class AudioDecoder(Decoder):
    """Mono float32 samples of the first audio stream: 16 kHz on media time, or native."""

    kind = "audio"

    def __init__(self, path) -> None:
        super().__init__(path)
        self.stream = audio_stream(self.container)
        if self.stream is None:
            raise NoAudioStreamError(f"{path} has no audio stream; an audio track is needed")
        if self.stream.codec_context.sample_rate:  # 0: not known before decoding
            self._check_rate(self.stream.codec_context.sample_rate)

    def native(self) -> np.ndarray:
        """(N,) float32: every sample decoded from the first packet, at the stream's rate."""
        resampler = av.AudioResampler(format="fltp")
        pcm = [self._resampled(resampler, frame) for frame in self._decoded(self.stream)]
        return np.concatenate(pcm + [self._resampled(resampler, None)])

    def samples(self, first: int, stop: int | None) -> Iterator[np.ndarray]:
        """Consecutive chunks covering samples first, first+1, ... (< stop, or to the end) at 16 kHz;
        samples before the stream's first timestamp and in timestamp gaps are zeros."""
        start_sec = first / SAMPLE_RATE
        from_start = start_sec <= _AUDIO_PREROLL_SEC
        self._seek(self.stream, 0.0 if from_start else start_sec - _AUDIO_PREROLL_SEC)
        out = _Placer(first, stop)
        resampler = setup = expect = None
        anchored = False
        pos = 0  # sample index of the next resampler output
        for frame in self._decoded(self.stream):
            self._check_rate(frame.sample_rate)
            t = self._time(frame.pts, self.stream) if frame.pts is not None else (expect or Fraction(0))
            key = (frame.format.name, frame.layout.name, frame.sample_rate)
            jump = expect is not None and abs(t - expect) > _GAP_SEC
            if jump and t > expect:
                self.log.gaps.append((float(expect), float(t)))
            if resampler is not None and (jump or key != setup):  # gap or new format: flush
                pcm = self._resampled(resampler, None)
                yield from out.place(pcm, pos)
                pos += len(pcm)
                resampler = None
            expect = t + Fraction(frame.samples, frame.sample_rate)
            if jump or not anchored:  # (re-)anchor on the timestamp, on the full decode's sample grid
                frame, anchor = _on_output_grid(frame, t)
                if frame is None:
                    continue
                pos, anchored = anchor if not anchored else max(pos, anchor), True
            if resampler is None:
                resampler, setup = av.AudioResampler(format="fltp", layout=frame.layout, rate=SAMPLE_RATE), key
            pcm = self._resampled(resampler, frame)
            yield from out.place(pcm, pos)
            pos += len(pcm)
            if out.done:
                return
        if resampler is not None:
            yield from out.place(self._resampled(resampler, None), pos)
        elif from_start and not self.log.decoded:
            raise self.nothing_decoded()

    def _check_rate(self, rate: int) -> None:
        """UnsupportedMediaError for a sample rate (Hz) outside RATES."""
        if not RATES[0] <= rate <= RATES[1]:
            raise UnsupportedMediaError(f"{self.path}: the audio stream has a sample rate of {rate} Hz; rates of "
                                        f"{RATES[0]}-{RATES[1]} Hz are supported")

    def _resampled(self, resampler, frame) -> np.ndarray:
        """mono(resampler.resample(frame)); MediaDecodeError when FFmpeg cannot convert the stream's audio."""
        try:
            return mono(resampler.resample(frame))
        except av.error.FFmpegError as e:
            cc = self.stream.codec_context
            raise MediaDecodeError(f"{self.path}: the audio ({cc.channels} channels, {cc.sample_rate} Hz) cannot be "
                                   f"converted to 16 kHz mono ({e}); audio with a standard channel layout is "
                                   f"needed") from e


class _Placer:
    """Turns (pcm, position) pieces into one gap-free run of samples [first, stop): zeros fill holes,
    overlaps and samples outside the range are dropped."""

    def __init__(self, first: int, stop: int | None) -> None:
        self.next, self.stop = first, stop

    @property
    def done(self) -> bool:
        return self.stop is not None and self.next >= self.stop

    def place(self, pcm: np.ndarray, pos: int) -> Iterator[np.ndarray]:
        end = pos + len(pcm) if self.stop is None else min(pos + len(pcm), self.stop)
        if end <= self.next:
            return
        while self.next < min(pos, end):  # a hole before pcm (up to stop): zeros, _ZEROS at a time
            n = min(pos, end, self.next + _ZEROS) - self.next
            yield np.zeros(n, np.float32)
            self.next += n
        if end > self.next:
            yield pcm[self.next - pos:end - pos]
            self.next = end


class Samples:
    """Takes exact sample counts from an iterator of consecutive chunks."""

    def __init__(self, chunks: Iterator[np.ndarray]) -> None:
        self.chunks, self.buffer = chunks, np.empty(0, np.float32)

    def take(self, n: int | None) -> np.ndarray:
        """The next n samples (all the rest if n is None; fewer at the end)."""
        parts, have = [self.buffer], len(self.buffer)
        while n is None or have < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        pcm = np.concatenate(parts)
        n = len(pcm) if n is None else min(n, len(pcm))
        self.buffer = pcm[n:]
        return np.ascontiguousarray(pcm[:n], dtype=np.float32)


def mono(frames) -> np.ndarray:
    """Mean over channels of planar float frames: (sum of channels) / C in float32."""
    if not frames:
        return np.empty(0, np.float32)
    pcm = np.concatenate([f.to_ndarray() for f in frames], axis=1) if len(frames) > 1 else frames[0].to_ndarray()
    return pcm[0].copy() if len(pcm) == 1 else pcm.mean(axis=0, dtype=np.float32)


def _on_output_grid(frame, t: Fraction):
    """(frame or its tail or None, output position) such that resampling starts on an input sample
    that falls exactly on a 16-kHz sample (input index a multiple of rate / gcd(rate, 16000), counted
    from media time 0). Decoding from a seek point then resamples on the same grid as a full decode."""
    rate = frame.sample_rate
    period = rate // math.gcd(rate, SAMPLE_RATE)
    first = round_half_away(t * rate)
    drop = -first % period
    anchor = (first + drop) * SAMPLE_RATE // rate
    if drop == 0:
        return frame, anchor
    if drop >= frame.samples:
        return None, anchor
    pcm = frame.to_ndarray()
    pcm = pcm[:, drop:] if frame.format.is_planar else pcm[:, drop * frame.layout.nb_channels:]
    tail = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format=frame.format.name, layout=frame.layout.name)
    tail.sample_rate = rate
    return tail, anchor
