"""DeSync: the audio-visual misalignment score of generated audio, compatible with hkchengrex/av-benchmark.

Per clip (duration d seconds, given or the audio file's length):
- video: the first int(25 d) frames at 25 fps (up to 3 missing frames filled with the last one),
  preset "av-benchmark" (shortest side 224 bicubic, centre crop 224, mean/std 0.5; see presets.py);
  visual segment i = frames [8i, 8i + 16), i < (T - 16) // 8 + 1;
- audio: mono, resampled to 16 kHz, the first int(16000 d) samples (shorter audio is an error);
  audio segment i = samples [5120i, 5120i + 10240), each its own log-mel (features.log_mel);
- the head runs on 14-segment windows; protocol "first_last" (av-benchmark): the first 14 and the
  last 14 segments of each stream; protocol "cover" (JavisBench-style): non-overlapping windows
  0, 14, 28, ... of the common segment range, the last one right-aligned to its end;
- DeSync of a clip = mean |predicted offset| (s) over its windows; of a set = mean over clips (equal to
  av-benchmark's mean over all windows for "first_last", where every clip has two).

Only the segments some window uses are encoded; clips are batched through the encoders and the head.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from sync_sdk.serving.batch import open_output
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.geometry import OFFSET_GRID_SEC
from sync_sdk.inputs.presets import FPS, SAMPLE_RATE, VideoPreset, get_preset, load_audio_16k, read_video_crops

SEG_FRAMES, STEP_FRAMES = 16, 8
SEG_SAMPLES, STEP_SAMPLES = 10240, 5120
WINDOW = 14
MAX_FILL_FRAMES = 3  # av-benchmark repeats the last frame when at most 3 frames are missing
PROTOCOLS = ("first_last", "cover")
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac", ".opus")


def n_segments(length: int, seg: int, step: int) -> int:
    """Number of whole segments of `seg` items stepping by `step` in `length` items."""
    return max(0, (length - seg) // step + 1)


def window_starts(n_video: int, n_audio: int, protocol: str = "first_last", window: int = WINDOW
                  ) -> list[tuple[int, int]]:
    """(first visual segment, first audio segment) of each `window`-segment window.

    first_last: [(0, 0), (n_video - window, n_audio - window)] (each stream's own last window, as
    av-benchmark slices [:, -14:] per stream); cover: non-overlapping windows over the common
    n = min(n_video, n_audio) segments, the last one right-aligned (start n - window)."""
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    n = min(n_video, n_audio)
    if n < window:
        need = ((window - 1) * STEP_FRAMES + SEG_FRAMES) / FPS
        raise ClipTooShortError(f"DeSync needs {window} segments ({need:.2f} s) of video and audio; "
                                f"got {n_video} visual and {n_audio} audio segments")
    if protocol == "first_last":
        return [(0, 0), (n_video - window, n_audio - window)]
    starts = list(range(0, n - window + 1, window))
    if starts[-1] != n - window:
        starts.append(n - window)
    return [(s, s) for s in starts]


def offsets_from_logits(logits: np.ndarray) -> np.ndarray:
    """(W, 21) offset logits -> (W,) predicted offsets in seconds (grid value of the argmax)."""
    return OFFSET_GRID_SEC[np.argmax(np.asarray(logits), axis=-1)].astype(np.float64)


def desync_score(logits: np.ndarray) -> float:
    """Mean |predicted offset| (s) over the windows' (W, 21) logits."""
    return float(np.mean(np.abs(offsets_from_logits(logits))))


@dataclass
class DesyncClip:
    """DeSync of one clip: `desync` (s) = mean |offsets|; offsets/confidences per window; windows =
    (first visual segment, first audio segment) pairs; segment counts of each stream."""

    name: str
    desync: float
    offsets: list[float]
    confidences: list[float]
    windows: list[tuple[int, int]]
    n_video_segments: int
    n_audio_segments: int
    duration_sec: float
    protocol: str
    preset: str
    error: str | None = field(default=None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["windows"] = [list(w) for w in self.windows]
        return d


@dataclass
class _Prepared:
    name: str
    crops: np.ndarray   # uint8 (T, 224, 224, 3)
    wave: np.ndarray    # float32 (N,) 16 kHz
    duration: float
    preset: VideoPreset
    windows: list[tuple[int, int]]
    n_video: int
    n_audio: int


def load_pair(video, audio, duration_sec: float | None = None, preset: str | VideoPreset = "av-benchmark"
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """(uint8 (int(25 d), 224, 224, 3) crops, float32 (int(16000 d),) audio, d) of a video/audio pair.

    video: path | uint8 frames (T, H, W, 3) at 25 fps; audio: path | (wave (N,) or (N, C), sample_rate).
    duration_sec: None = the audio track's length."""
    wave, audio_sec = load_audio_16k(audio)
    d = float(audio_sec if duration_sec is None else duration_sec)
    if d <= 0:
        raise InputError(f"duration must be positive, got {d}")
    n_samples, n_frames = int(SAMPLE_RATE * d), int(FPS * d)
    if len(wave) < n_samples:
        raise ClipTooShortError(f"audio holds {len(wave) / SAMPLE_RATE:.3f} s at 16 kHz, {d:.3f} s asked")
    p = get_preset(preset)
    if isinstance(video, (str, Path)):
        crops = read_video_crops(video, p, max_frames=n_frames)
    else:
        crops = p.crop_frames(np.asarray(video)[:n_frames])
    missing = n_frames - len(crops)
    if missing > 0:
        if missing > MAX_FILL_FRAMES or not len(crops):
            raise ClipTooShortError(f"video holds {len(crops)} frames at 25 fps, {n_frames} ({d:.3f} s) asked")
        crops = np.concatenate([crops, np.repeat(crops[-1:], missing, axis=0)])
    return crops, wave[:n_samples], d


def _prepare(name: str, video, audio, duration_sec, protocol: str, preset) -> _Prepared:
    p = get_preset(preset)
    crops, wave, d = load_pair(video, audio, duration_sec, p)
    nv = n_segments(len(crops), SEG_FRAMES, STEP_FRAMES)
    na = n_segments(len(wave), SEG_SAMPLES, STEP_SAMPLES)
    return _Prepared(name, crops, wave, d, p, window_starts(nv, na, protocol), nv, na)


def _numpy(x) -> np.ndarray:
    return x.get() if type(x).__module__.split(".")[0] == "cupy" else np.asarray(x)


def encode_batched(fn, n: int, make: Callable[[range], np.ndarray], batch: int) -> np.ndarray:
    """NumPy (n, tokens, dim): fn(make(ids)) over ids 0..n-1, `batch` ids per call."""
    outs = [_numpy(fn(make(range(i, min(i + batch, n))))) for i in range(0, n, batch)]
    return np.concatenate(outs)


def _check_engine(engine) -> None:
    cfg = engine.config
    if cfg.variant != "sync" or cfg.n_segments != WINDOW:
        raise InputError(f"DeSync needs a 14-segment offset (sync) model, got a {cfg.variant!r} model with "
                         f"{cfg.n_segments} segments")


def _logits(engine, clips: list[_Prepared], head_batch: int = 16) -> list[np.ndarray]:
    """Offset logits (W_i, 21) per prepared clip; only the segments the windows use are encoded."""
    from sync_sdk.inputs.cpu import log_mel
    be, batch = engine.backend, int(getattr(engine, "max_batch", WINDOW))
    vsegs = sorted({(c, v + s) for c, p in enumerate(clips) for v, _ in p.windows for s in range(WINDOW)})
    asegs = sorted({(c, a + s) for c, p in enumerate(clips) for _, a in p.windows for s in range(WINDOW)})

    def video(ids):
        return np.stack([clips[c].preset.normalise(clips[c].crops[STEP_FRAMES * g:STEP_FRAMES * g + SEG_FRAMES])
                         for c, g in (vsegs[i] for i in ids)])

    def audio(ids):
        return log_mel(np.stack([clips[c].wave[STEP_SAMPLES * g:STEP_SAMPLES * g + SEG_SAMPLES]
                                 for c, g in (asegs[i] for i in ids)]))

    vfeat = encode_batched(be.encode_video, len(vsegs), video, batch)
    afeat = encode_batched(be.encode_audio, len(asegs), audio, batch)
    vrow = {k: i for i, k in enumerate(vsegs)}
    arow = {k: i for i, k in enumerate(asegs)}
    wins = [(c, v, a) for c, p in enumerate(clips) for v, a in p.windows]
    vtake = np.array([[vrow[(c, v + s)] for s in range(WINDOW)] for c, v, _ in wins])
    atake = np.array([[arow[(c, a + s)] for s in range(WINDOW)] for c, _, a in wins])
    logits = []
    for i in range(0, len(wins), head_batch):
        vt, at = vtake[i:i + head_batch], atake[i:i + head_batch]
        v = vfeat[vt.reshape(-1)].reshape(len(vt), WINDOW * VIDEO_TOKENS_PER_SEGMENT, vfeat.shape[-1])
        a = afeat[at.reshape(-1)].reshape(len(at), WINDOW * AUDIO_TOKENS_PER_SEGMENT, afeat.shape[-1])
        logits.append(_numpy(be.head(v, a)))
    logits = np.concatenate(logits)
    bounds = np.cumsum([0] + [len(p.windows) for p in clips])
    return [logits[bounds[i]:bounds[i + 1]] for i in range(len(clips))]


def _result(p: _Prepared, logits: np.ndarray, protocol: str) -> DesyncClip:
    from sync_sdk.results import softmax
    probs = softmax(logits)
    k = np.argmax(logits, axis=-1)
    return DesyncClip(name=p.name, desync=desync_score(logits), offsets=[float(o) for o in offsets_from_logits(logits)],
                      confidences=[float(probs[i, j]) for i, j in enumerate(k)], windows=list(p.windows),
                      n_video_segments=p.n_video, n_audio_segments=p.n_audio, duration_sec=p.duration,
                      protocol=protocol, preset=p.preset.name)


def desync(engine, video, audio, duration_sec: float | None = None, protocol: str = "first_last",
           preset: str = "av-benchmark", name: str | None = None) -> DesyncClip:
    """DeSync of one video (path | uint8 (T,H,W,3) frames at 25 fps) and its generated audio
    (path | (wave, sample_rate)); duration_sec None = the audio's length. Raises on bad input."""
    _check_engine(engine)
    name = name or (Path(video).stem if isinstance(video, (str, Path)) else "clip")
    p = _prepare(name, video, audio, duration_sec, protocol, preset)
    return _result(p, _logits(engine, [p])[0], protocol)


def desync_batch(engine, items: Iterable[tuple], duration_sec: float | None = None, protocol: str = "first_last",
                 preset: str = "av-benchmark", batch_clips: int = 8):
    """Yield a DesyncClip per (name, video, audio) item, `batch_clips` clips per encoder/head pass.

    A clip that cannot be read yields a DesyncClip with `error` set and desync NaN (the others go on)."""
    _check_engine(engine)
    pending: list[_Prepared] = []

    def run():
        for p, lg in zip(pending, _logits(engine, pending)):
            yield _result(p, lg, protocol)
        pending.clear()

    for name, video, audio in items:
        try:
            pending.append(_prepare(name, video, audio, duration_sec, protocol, preset))
        except InputError as e:
            yield _failed(name, protocol, preset, e)
        if len(pending) >= batch_clips:
            yield from run()
    if pending:
        yield from run()


def _failed(name: str, protocol: str, preset, err: Exception) -> DesyncClip:
    return DesyncClip(name=name, desync=float("nan"), offsets=[], confidences=[], windows=[], n_video_segments=0,
                      n_audio_segments=0, duration_sec=0.0, protocol=protocol, preset=get_preset(preset).name,
                      error=f"{type(err).__name__}: {err}")


# --- directories ------------------------------------------------------------------------------
def pair_by_stem(videos_dir, audios_dir) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """([(stem, video, audio)] sorted by stem, stems with video only, stems with audio only)."""
    def index(d, exts):
        d = Path(d)
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
        return {p.stem: p for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in exts}
    videos, audios = index(videos_dir, VIDEO_EXTS), index(audios_dir, AUDIO_EXTS + VIDEO_EXTS)
    pairs = [(s, videos[s], audios[s]) for s in sorted(videos.keys() & audios.keys())]
    return pairs, sorted(videos.keys() - audios.keys()), sorted(audios.keys() - videos.keys())


def summarise(records: Sequence[dict]) -> dict:
    """Mean DeSync over the clips scored ok (av-benchmark's number), and the counts."""
    ok = [r["result"] for r in records if r.get("status") == "ok"]
    return {"desync": float(np.mean([r["desync"] for r in ok])) if ok else float("nan"),
            "n_clips": len(ok), "n_failed": sum(r.get("status") != "ok" for r in records),
            "n_windows": int(sum(len(r["offsets"]) for r in ok))}


def read_records(path) -> dict[str, dict]:
    """The last record per clip name of a DeSync JSONL file (unparseable lines, e.g. a line cut by a
    crash, are ignored)."""
    done: dict[str, dict] = {}
    path = Path(path)
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "name" in rec:
                done[rec["name"]] = rec
    return done


def desync_dir(engine, videos_dir, audios_dir, out_path, duration_sec: float | None = None,
               protocol: str = "first_last", preset: str = "av-benchmark", batch_clips: int = 8,
               resume: bool = False, progress: bool = False) -> dict:
    """DeSync of every video/audio pair (paired by file stem) of two directories.

    One JSON line per clip is appended to `out_path` as its batch finishes: {"name", "video", "audio",
    "status": "ok", "settings", "result": DesyncClip.to_dict()} or {..., "status": "error", "error",
    "message"}; a bad clip is recorded and the others go on. resume: clips with an "ok" line (computed
    with the same settings) are not recomputed, failed ones are tried again. Returns the summary:
    mean DeSync over the ok clips of this directory pair, counts, settings, unpaired stems."""
    out_path = Path(out_path)
    settings = {"protocol": protocol, "preset": get_preset(preset).name, "duration_sec": duration_sec,
                "model_id": getattr(engine, "model_id", None)}
    pairs, video_only, audio_only = pair_by_stem(videos_dir, audios_dir)
    done = {k: r for k, r in read_records(out_path).items() if r.get("status") == "ok"} if resume else {}
    other = sorted(k for k, r in done.items() if r.get("settings") != settings)
    if other:
        raise InputError(f"{out_path} holds results for {other[:3]} computed with other settings "
                         f"({done[other[0]].get('settings')}, now {settings}); write to another file")
    todo = [(s, v, a) for s, v, a in pairs if s not in done]
    paths = {s: (v, a) for s, v, a in pairs}
    from tqdm import tqdm
    records = dict(done)
    with open_output(out_path, resume) as out, \
            tqdm(total=len(todo), desc="sync-sdk desync", unit="clip", disable=not progress) as bar:
        for clip in desync_batch(engine, todo, duration_sec, protocol, preset, batch_clips):
            v, a = paths[clip.name]
            rec = {"name": clip.name, "video": str(v), "audio": str(a)}
            if clip.error is None:
                rec.update(status="ok", settings=settings, result=clip.to_dict())
            else:
                err, _, msg = clip.error.partition(": ")
                rec.update(status="error", error=err, message=msg)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            records[clip.name] = rec
            bar.update(1)
    summary = summarise([records[s] for s, _, _ in pairs if s in records])
    summary.update(settings=settings, video_only=video_only, audio_only=audio_only,
                   failed=[s for s, _, _ in pairs if records.get(s, {}).get("status") == "error"])
    return summary
