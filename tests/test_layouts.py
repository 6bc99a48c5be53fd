"""Video layouts against independent re-implementations of each project's preprocessing (torch ops).

References written here from the projects' public code: MMAudio's eval_utils.load_video + av_utils.read_frames
(PyAV loop, 8- and 25-fps streams, the duration cut), HunyuanVideo-Foley's get_frames_av (PyAV loop, 15-s
end), torio's fps=25 filter (av-benchmark, ThinkSound: the rule FFmpeg's filter applies, from each frame's
pts and duration), torchvision v2 Resize(224, bicubic) on uint8 = torch interpolate(antialias=True),
CenterCrop, ToDtype(scale) + Normalize(0.5, 0.5), the official fp16 table; 16-frame segments every 8.

The frame choice, the cuts and the tables do not depend on media.resize_short_crop; `test_resize_is_torch`
and the end-to-end tests do (bit for bit with torch's uint8 bicubic path).
"""
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import sync_sdk
from sync_sdk.errors import ClipTooShortError, InputError, InvalidArrayError
from sync_sdk.inputs.layouts import LAYOUTS, TORCHVISION_TABLE, get_layout, visual_inputs
from sync_sdk.media import read_video_crops, resize_short_crop
from sync_sdk.media.frame_picks import count_slots, pick_next, read_pyav_crops
from tests.conftest import SHARED
from tests.test_desync import write_video_mp4

torch = pytest.importorskip("torch")

RATES = {"25": Fraction(25), "30": Fraction(30), "29.97": Fraction(30000, 1001), "24": Fraction(24)}
SIZES = {"25": (240, 426), "30": (200, 356), "29.97": (270, 480), "24": (224, 300)}  # (H, W): down, up, none
TORCHVISION_LAYOUTS = ["av-benchmark", "mmaudio", "hunyuan-foley", "thinksound"]
VIDEOS = sorted((SHARED / "reference" / "videos").glob("*.mp4"))


# --- clips -------------------------------------------------------------------------------------------
def _distinct_frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """n smooth random frames, each different (a frame picked in the wrong slot shows)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, h // 16 + 1, w // 16 + 1, 3))
    img = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :h, :w]
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """2.4-s H.264 clips at 25, 30, 29.97 and 24 fps (sizes: downscaled, upscaled, at 224)."""
    d = tmp_path_factory.mktemp("layouts")
    return {k: write_video_mp4(d / f"clip_{k}.mp4", _distinct_frames(int(2.4 * r), *SIZES[k], seed=i), r)
            for i, (k, r) in enumerate(RATES.items())}


@pytest.fixture(params=VIDEOS or [None], ids=lambda p: p.stem if p else "no-videos")
def real_video(request) -> Path:
    if request.param is None:
        pytest.skip(f"reference videos not found in {SHARED / 'reference' / 'videos'} (lay ../shared beside the repo)")
    return request.param


# --- reference frame choices -------------------------------------------------------------------------
def _decoded(path: Path):
    """(frame, time (s) as PyAV's frame.time) of every decoded frame, in order."""
    with av.open(str(path)) as box:
        for packet in box.demux(box.streams.video[0]):
            for frame in packet.decode():
                yield frame, frame.time


def _ref_read_frames(path: Path, list_of_fps: list[float], end_sec: float) -> list[list[np.ndarray]]:
    """MMAudio's av_utils.read_frames (start 0): one frame list per rate (HunyuanVideo-Foley's get_frames_av
    is the same loop with one rate)."""
    out = [[] for _ in list_of_fps]
    nxt = [0.0 for _ in list_of_fps]
    delta = [1 / f for f in list_of_fps]
    with av.open(str(path)) as box:
        for packet in box.demux(box.streams.video[0]):
            for frame in packet.decode():
                t = frame.time
                if t < 0:
                    continue
                if t > end_sec:
                    break
                for i in range(len(list_of_fps)):
                    while t >= nxt[i]:
                        out[i].append(frame.to_ndarray(format="rgb24"))
                        nxt[i] += delta[i]
    return out


def _ref_fps_filter(path: Path) -> list[np.ndarray]:
    """torio's fps=25 frames: each frame's time x 25 rounded half away from zero is its slot; output slots
    run from the first frame's to round(end x 25), end = last pts + its duration; a slot shows the last
    frame whose slot is <= it."""
    items = []
    with av.open(str(path)) as box:
        st = box.streams.video[0]
        for frame in box.decode(st):
            items.append((frame.pts * st.time_base, frame.duration * st.time_base, frame.to_ndarray(format="rgb24")))

    def rnd(x: Fraction) -> int:
        return math.floor(x + Fraction(1, 2))
    slots = [rnd(t * 25) for t, _, _ in items]
    end = rnd((items[-1][0] + items[-1][1]) * 25)
    return [items[max(i for i, s in enumerate(slots) if s <= n)][2] for n in range(slots[0], end)]


def _ref_frames(path: Path, layout: str, d: float | None) -> np.ndarray:
    """uint8 (T, H, W, 3) frames each project keeps for a clip length d (None: its default)."""
    if layout == "mmaudio":  # eval_utils.load_video
        clip, sync = _ref_read_frames(path, [8.0, 25.0], math.inf if d is None else d)
        duration = math.inf if d is None else d
        if len(clip) / 8.0 < duration:
            duration = len(clip) / 8.0
        if len(sync) / 25.0 < duration:
            duration = len(sync) / 25.0
        return np.stack(sync[:int(25.0 * duration)])
    if layout == "hunyuan-foley":  # get_frames_av(path, 25, max_length=d)
        frames = _ref_read_frames(path, [25], 15 if d is None else d)[0]
        return np.stack(frames if d is None else frames[:int(d * 25)])
    frames = _ref_fps_filter(path)
    if d is None:
        return np.stack(frames)
    n = int(25 * d)
    frames = frames[:n]
    if layout == "thinksound" or (layout == "av-benchmark" and n - len(frames) <= 3):
        frames += [frames[-1]] * (n - len(frames))
    return np.stack(frames)


# --- reference transforms (torchvision v2 on uint8, as the projects call it) -----------------------------
def _ref_resize_crop(frames: np.ndarray) -> np.ndarray:
    """Resize(224, BICUBIC) + CenterCrop(224) of (T, H, W, 3) uint8, on the (T, C, H, W) view the projects pass."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    nh, nw = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
    if (nh, nw) != (h, w):  # torchvision returns the image as it is at the target size
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    return x[:, :, top:top + 224, left:left + 224].permute(0, 2, 3, 1).numpy()


def _ref_torchvision_float(crops: np.ndarray) -> np.ndarray:
    """ToImage + ToDtype(float32, scale=True) + Normalize(0.5, 0.5): (T, 3, 224, 224) float32."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(torch.float32).mul_(1.0 / 255)
    mean = torch.as_tensor([0.5] * 3, dtype=torch.float32).view(-1, 1, 1)
    return x.sub_(mean).div_(mean.clone()).numpy()


def _ref_fp16_float(crops: np.ndarray) -> np.ndarray:
    """The official RGBToHalfToZeroOne + RGBNormalize(0.5, 0.5) in float16, cast to float32."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).half() / 255
    return ((x - 0.5) / 0.5).float().numpy()


def _ref_inputs(path: Path, layout: str, d: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 crops, float32 encoder input) of the project's whole pipeline."""
    if layout == "synchformer":  # 25 fps / short side 256 files: read_video's frames, centre crop, fp16
        frames = np.stack([f.to_ndarray(format="rgb24") for f, _ in _decoded(path)])
        frames = frames if d is None else frames[:int(25 * d)]
        top, left = (int(round((s - 224) / 2.0)) for s in frames.shape[1:3])
        crops = frames[:, top:top + 224, left:left + 224]
        return crops, _ref_fp16_float(crops)
    crops = _ref_resize_crop(_ref_frames(path, layout, d))
    return crops, _ref_torchvision_float(crops)


class _Keep:
    """A layout that keeps the decoded frames as they are (frame choice only)."""

    def __init__(self, frame_size: str) -> None:
        self.frame_size = frame_size

    def crop_frames(self, frames):
        return frames


# --- tables ------------------------------------------------------------------------------------------------
def test_torchvision_table_is_torch_arithmetic():
    x = torch.arange(256).to(torch.float32).mul(1 / 255)
    ref = x.sub(torch.tensor(0.5)).div(torch.tensor(0.5)).numpy()
    np.testing.assert_array_equal(TORCHVISION_TABLE, ref)
    divided = (np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    assert np.count_nonzero(divided != ref) == 111  # u / 255 is not ToDtype's u * (1/255)
    crops = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    for name in TORCHVISION_LAYOUTS:
        np.testing.assert_array_equal(get_layout(name).normalise(crops), _ref_torchvision_float(crops))
    np.testing.assert_array_equal(get_layout("synchformer").normalise(crops), _ref_fp16_float(crops))


# --- frame choice (no resize involved) -------------------------------------------------------------------
@pytest.mark.parametrize("rate", list(RATES))
def test_pyav_frames_are_the_projects_loop(clips, rate):
    path = clips[rate]
    for end in (None, 1.3):
        frames, last = read_pyav_crops(path, lambda f: f, end_sec=end)
        clip, sync = _ref_read_frames(path, [8.0, 25.0], math.inf if end is None else end)
        np.testing.assert_array_equal(frames, np.stack(sync))
        assert count_slots(last, 8.0) == len(clip) and count_slots(last, 25.0) == len(sync)
    if rate == "25":  # the float sums: slot 6 shows frame 7, slots 18.. the next frame
        times = [t for _, t in _decoded(path)]
        assert pick_next(times)[:20] == [0, 1, 2, 3, 4, 5, 7, 7] + list(range(8, 18)) + [19, 20]


@pytest.mark.parametrize("rate", list(RATES))
def test_native_frames_are_ffmpeg_fps_filter(clips, rate):
    np.testing.assert_array_equal(read_video_crops(clips[rate], _Keep("native")), np.stack(_ref_fps_filter(clips[rate])))


def _indexed(n: int) -> np.ndarray:
    """n frames of 224 x 224 (resize and crop leave them as they are) whose pixels say their index."""
    f = np.zeros((n, 224, 224, 3), np.uint8)
    f[..., 0], f[..., 1] = (np.arange(n) % 256)[:, None, None], (np.arange(n) // 256)[:, None, None]
    return f


def _shown(crops: np.ndarray) -> list[int]:
    return [int(c[0, 0, 0]) + 256 * int(c[0, 0, 1]) for c in crops]


def _ref_picks(n: int, fps: float, rates: list[float], end: float) -> list[list[int]]:
    """read_frames' loop over frames in memory at `fps` (frame i at i / fps): frame index per slot."""
    out, nxt = [[] for _ in rates], [0.0] * len(rates)
    for i in range(n):
        t = i / fps
        if t > end:
            break
        for j, r in enumerate(rates):
            while t >= nxt[j]:
                out[j].append(i)
                nxt[j] += 1 / r
    return out


def _ref_fps_filter_picks(n: int, fps: float) -> list[int]:
    """FFmpeg's fps=25 filter over n frames at `fps` (frame i at i / fps, rate as a fraction of at most
    1001000 in the denominator): slot of frame i = round(i / fps x 25) half up; slots 0 .. round(n / fps x 25)
    - 1; a slot shows the last frame whose slot is <= it."""
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    slots = [math.floor(Fraction(i) / rate * 25 + Fraction(1, 2)) for i in range(n)]
    n_out = math.floor(Fraction(n) / rate * 25 + Fraction(1, 2))
    return [max(i for i in range(n) if slots[i] <= k) for k in range(n_out)]


@pytest.mark.parametrize("fps", [25.0, 30.0, 30000 / 1001, 24.0, 12.5])
@pytest.mark.parametrize("d", [None, 2.0, 2.37, 4.2, 4.3])
def test_duration_cuts_of_each_project(fps, d):
    n = int(4.1 * fps)
    frames = _indexed(n)
    clip, sync = _ref_picks(n, fps, [8.0, 25.0], math.inf if d is None else d)
    duration = math.inf if d is None else d  # load_video: cut to the CLIP frames' length, then the sync frames'
    if len(clip) / 8.0 < duration:
        duration = len(clip) / 8.0
    if len(sync) / 25.0 < duration:
        duration = len(sync) / 25.0
    assert _shown(visual_inputs(frames, "mmaudio", duration_sec=d, fps=fps)) == sync[:int(25.0 * duration)]
    hunyuan = _ref_picks(n, fps, [25.0], 15 if d is None else d)[0]
    assert _shown(visual_inputs(frames, "hunyuan-foley", duration_sec=d, fps=fps)) == (
        hunyuan if d is None else hunyuan[:int(d * 25)])
    native = _ref_fps_filter_picks(n, fps)
    for layout in ("av-benchmark", "thinksound"):
        assert _shown(visual_inputs(frames, layout, fps=fps)) == native
    if d is None:
        return
    k = int(25 * d)
    assert _shown(visual_inputs(frames, "thinksound", duration_sec=d, fps=fps)) == (native + [native[-1]] * k)[:k]
    if k > len(native):  # av-benchmark raises "Sync video too short" for any missing frame
        with pytest.raises(ClipTooShortError, match="needs them all"):
            visual_inputs(frames, "av-benchmark", duration_sec=d, fps=fps)
    else:
        assert _shown(visual_inputs(frames, "av-benchmark", duration_sec=d, fps=fps)) == native[:k]


def test_hunyuan_reads_15_s_without_a_length():
    frames = _indexed(170)  # 17 s at 10 fps
    shown = _shown(visual_inputs(frames, "hunyuan-foley", fps=10.0))
    assert shown == _ref_picks(170, 10.0, [25.0], 15)[0] and max(shown) == 150  # frame 150 is at 15.0 s


# --- resize (the one step shared with media.resize_short_crop) ---------------------------------------------
@pytest.mark.parametrize("size", list(SIZES.values()) + [(256, 454), (256, 340)], ids=str)
def test_resize_is_torch(size):
    frames = _distinct_frames(4, *size, seed=7)
    np.testing.assert_array_equal(resize_short_crop(frames), _ref_resize_crop(frames))


# --- whole pipelines, bit for bit --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", TORCHVISION_LAYOUTS)
@pytest.mark.parametrize("rate", list(RATES))
def test_synthetic_clips_bit_identical(clips, layout, rate):
    crops, ref = _ref_inputs(clips[rate], layout)
    got = visual_inputs(clips[rate], layout)
    np.testing.assert_array_equal(got, resize_short_crop(_ref_frames(clips[rate], layout, None)))  # all but resize
    np.testing.assert_array_equal(got, crops)
    np.testing.assert_array_equal(visual_inputs(clips[rate], layout, normalize=True), ref)


@pytest.mark.parametrize("layout, d", [("av-benchmark", None), ("mmaudio", 8.0), ("hunyuan-foley", None),
                                       ("thinksound", 9.0), ("synchformer", 4.8)])  # as each project runs
def test_reference_videos_bit_identical(real_video, layout, d):
    crops, ref = _ref_inputs(real_video, layout, d)
    np.testing.assert_array_equal(visual_inputs(real_video, layout, duration_sec=d), crops)
    got = sync_sdk.visual_inputs(real_video, layout=layout, normalize=True, duration_sec=d)
    assert got.dtype == np.float32 and got.shape == (len(crops), 3, 224, 224)
    np.testing.assert_array_equal(got, ref)


# --- features: our visual_features against the torch encoder on the reference inputs ------------------------
@pytest.fixture(scope="module")
def engine():
    from sync_sdk.engine import SyncEngine
    from tests.tiny_engine import tiny_backend
    return SyncEngine(tiny_backend(), max_batch=3)


def _torch_features(engine, x: np.ndarray) -> np.ndarray:
    """The projects' encode_video_with_sync on (T, 3, 224, 224): segments x[8i:8i+16], -> (S*8, D)."""
    v = torch.from_numpy(x)[None]
    s = (v.shape[1] - 16) // 8 + 1
    segs = torch.stack([v[:, 8 * i:8 * i + 16] for i in range(s)], dim=1)[0]  # (S, 16, 3, 224, 224)
    with torch.inference_mode():
        out = engine.backend.model.encode_video(segs)
    return out.reshape(-1, out.shape[-1]).numpy()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_features_equal_the_encoder_on_reference_inputs(clips, engine, layout):
    path = clips["29.97"] if layout != "synchformer" else write_video_mp4(clips["25"].with_name("c256.mp4"),
                                                                    _distinct_frames(40, 256, 320, seed=9), RATES["25"])
    _, ref = _ref_inputs(path, layout)
    feats = engine.visual_features(path, layout=layout)
    assert feats.dtype == np.float32 and feats.shape == (((len(ref) - 16) // 8 + 1) * 8, engine.config.v_dim)
    np.testing.assert_allclose(feats, _torch_features(engine, ref), atol=2e-5, rtol=1e-5)


def test_features_of_a_reference_video(real_video, engine):
    _, ref = _ref_inputs(real_video, "mmaudio", 8.0)
    np.testing.assert_allclose(engine.visual_features(real_video, layout="mmaudio", duration_sec=8.0),
                               _torch_features(engine, ref), atol=2e-5, rtol=1e-5)


# --- the front door ------------------------------------------------------------------------------------------
def test_arguments_are_checked(engine):
    frames = _indexed(40)
    with pytest.raises(InputError, match="unknown layout 'imagebind'.*hunyuan-foley"):
        visual_inputs(frames, "imagebind")
    with pytest.raises(InvalidArrayError, match="fps"):
        visual_inputs(frames, fps=0)
    with pytest.raises(InputError, match="duration_sec must be positive"):
        visual_inputs(frames, duration_sec=-1.0)
    with pytest.raises(InputError, match="source must be"):
        visual_inputs([1, 2, 3])
    np.testing.assert_array_equal(engine.visual_inputs(frames, layout="mmaudio", normalize=True),
                                  visual_inputs(frames, "mmaudio", normalize=True))
