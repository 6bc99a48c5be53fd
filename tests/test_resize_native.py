"""The "av-benchmark" resize against torchvision's uint8 path: torch's native uint8 bicubic antialias
kernel (fixed-point weights, uint8 after each pass), written out independently here, checked against
torch itself when it is installed, and on the real videos of ../shared/reference/videos."""
import math

import numpy as np
import pytest

from sync_sdk.errors import InputError, InvalidArrayError
from sync_sdk.inputs.layouts import get_layout
from sync_sdk.media import bicubic_aa_taps, read_video_crops, resize_short_crop
from tests.test_media_options import Native

# (height, width) of the inputs: odd sizes, landscape, portrait, 4:3 and 16:9 video, upscales, tiny
# inputs, extreme aspect ratios, and inputs whose shortest side is already 224 (no pass at all)
SIZES = [(97, 131), (131, 97), (360, 640), (480, 360), (270, 481), (256, 454), (5, 7), (1, 1), (2, 3),
         (3, 1), (150, 1200), (1201, 149), (225, 224), (224, 301), (300, 224), (224, 224)]
KINDS = ["random", "checker", "spikes", "stripes"]


# --- the independent reference --------------------------------------------------------------------
def _cubic(x: float) -> float:
    """Keys' cubic with a = -0.5, in torch's evaluation order (the float64 weights must match exactly)."""
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2.0:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def _ref_matrix(n_in: int, n_out: int) -> tuple[np.ndarray, int]:
    """((n_out, n_in) int64 fixed-point weights, precision), one output pixel at a time."""
    scale = n_in / n_out
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    max_taps = 2 * math.ceil(support) + 1
    rows, w_max = [], 0.0
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        n = min(max(min(int(centre + support + 0.5), n_in) - lo, 0), max_taps)
        ws = [_cubic((lo + j - centre + 0.5) * invscale) for j in range(n)]
        total = 0.0
        for w in ws:
            total += w
        ws = [w / total for w in ws]
        w_max = max([w_max] + ws)
        rows.append((lo, ws))
    precision = 0
    while precision < 22 and int(0.5 + w_max * 2 ** (precision + 1)) < 2 ** 15:
        precision += 1
    m = np.zeros((n_out, n_in), np.int64)
    for i, (lo, ws) in enumerate(rows):
        for j, w in enumerate(ws):
            v = w * 2 ** precision
            m[i, lo + j] = int(v - 0.5) if v < 0 else int(v + 0.5)
    return m, precision


def _ref_sums(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """(2^(p-1) + sum w * x) >> p along `axis` of uint8 x, before the clamp (int64)."""
    m, p = _ref_matrix(x.shape[axis], n_out)
    # float64 products and sums of these integers (< 2^53) are exact: the sums are integers
    acc = np.tensordot(m.astype(np.float64), x.astype(np.float64), axes=(1, axis))
    return (np.moveaxis(acc, 0, axis).astype(np.int64) + 2 ** (p - 1)) >> p


def _ref_pass(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """One integer pass along `axis` of uint8 x, clamped to uint8; none for an axis keeping its length."""
    if x.shape[axis] == n_out:
        return x
    return np.clip(_ref_sums(x, n_out, axis), 0, 255).astype(np.uint8)


def ref_resize(frames: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, new_h, new_w, 3): the width pass, then the height pass."""
    return _ref_pass(_ref_pass(frames, new_w, axis=2), new_h, axis=1)


def ref_preset(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, 224, 224, 3): Resize(224) on the whole frame, then CenterCrop(224)."""
    h, w = frames.shape[1:3]
    nh, nw = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
    top, left = round((nh - 224) / 2), round((nw - 224) / 2)
    return ref_resize(frames, nh, nw)[:, top:top + 224, left:left + 224]


def content(kind: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 (2, h, w, 3); checker, spikes and stripes drive the cubic's overshoot into the clamps."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    if kind == "checker":  # 0/255 one-pixel checkerboard, inverted in the second frame and the green channel
        c = ((np.arange(h)[:, None] + np.arange(w)) % 2 * 255).astype(np.uint8)
        img = np.stack([c, 255 - c, c], axis=-1)
        return np.stack([img, 255 - img])
    out = np.zeros((2, h, w, 3), np.uint8)
    if kind == "spikes":  # single bright pixels on black, and single dark pixels on white
        n = max(1, h * w // 50)
        out[0, rng.integers(0, h, n), rng.integers(0, w, n)] = 255
        out[1] = 255
        out[1, rng.integers(0, h, n), rng.integers(0, w, n)] = 0
        return out
    out[0, :, ::3] = 255  # stripes: one column in three lit, then one row in three
    out[1, ::3] = 255
    return out


# --- the reference itself -------------------------------------------------------------------------
def test_reference_matrices_are_the_normalised_kernel():
    m, p = _ref_matrix(640, 398)
    assert 14 <= p <= 22 and m.max() < 2 ** 15 <= 2 * m.max() + 2
    assert np.abs(m.sum(axis=1) - 2 ** p).max() <= 5  # rows sum to 1 up to the rounding of 9 taps
    m, p = _ref_matrix(97, 224)  # upscale: 4 or 5 taps, a few negative lobes
    assert (m < 0).any() and ((m != 0).sum(axis=1) <= 5).all()


# --- (a) resize_short_crop against the reference --------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_independent_reference(size, kind):
    frames = content(kind, *size, seed=sum(size))
    got = resize_short_crop(frames)
    assert got.shape == (2, 224, 224, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref_preset(frames))


@pytest.mark.parametrize("kind, size, new_w", [("checker", (97, 131), 302), ("spikes", (360, 640), 398)])
def test_cases_drive_the_sums_past_the_clamps(kind, size, new_w):
    """The cubic's negative lobes ring below 0 and above 255 on these inputs, in the width pass already."""
    sums = _ref_sums(content(kind, *size), new_w, axis=2)
    assert sums.min() < 0 and sums.max() > 255


def test_taps_cover_the_kernel_support():
    index, weight, p = bicubic_aa_taps(1280, 398)
    m, p_ref = _ref_matrix(1280, 398)
    assert p == p_ref and index.shape == weight.shape == (398, 2 * math.ceil(2 * 1280 / 398) + 1)
    assert index.min() >= 0 and index.max() < 1280
    dense = np.zeros((398, 1280), np.int64)
    np.add.at(dense, (np.arange(398)[:, None], index), weight)
    np.testing.assert_array_equal(dense, m)


def test_frames_are_chunked_without_changing_results(monkeypatch):
    import sync_sdk.media.resize as resize
    frames = content("random", 130, 170)
    whole = resize_short_crop(frames)
    monkeypatch.setattr(resize, "_BUDGET", 1)  # one frame per pass
    np.testing.assert_array_equal(resize_short_crop(frames), whole)
    assert resize_short_crop(frames[:0]).shape == (0, 224, 224, 3)


def test_bad_frames_are_refused():
    with pytest.raises(InputError, match="uint8"):
        resize_short_crop(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="RGB"):
        resize_short_crop(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(InvalidArrayError, match="height, width >= 1"):
        resize_short_crop(np.zeros((1, 0, 8, 3), np.uint8))
    with pytest.raises(InputError, match=">= 1 pixel"):
        bicubic_aa_taps(0, 224)


# --- (b) against torch's own kernel ---------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_interpolate(size, kind):
    torch = pytest.importorskip("torch", reason="torch is needed to compare with its native uint8 kernel")
    frames = content(kind, *size, seed=sum(size))
    expect = torch_preset(torch, frames)
    np.testing.assert_array_equal(resize_short_crop(frames), expect)
    np.testing.assert_array_equal(ref_preset(frames), expect)  # the reference is torch's kernel too


def test_torch_skips_an_axis_that_keeps_its_length():
    """No pass (and no rounding) along an axis whose length does not change, as the reference assumes."""
    torch = pytest.importorskip("torch", reason="torch is needed to compare with its native uint8 kernel")
    frames = content("random", 97, 131)
    for new_h, new_w in [(97, 302), (224, 131)]:
        x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
        y = torch.nn.functional.interpolate(x, size=[new_h, new_w], mode="bicubic", antialias=True)
        np.testing.assert_array_equal(y.permute(0, 2, 3, 1).numpy(), ref_resize(frames, new_h, new_w))


def torch_preset(torch, frames: np.ndarray) -> np.ndarray:
    """What av-benchmark's Resize(224, BICUBIC) + CenterCrop(224) does to uint8 (T, C, H, W) on the CPU."""
    h, w = frames.shape[1:3]
    nh, nw = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
    x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(x, size=[nh, nw], mode="bicubic", align_corners=False, antialias=True)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    return x[:, :, top:top + 224, left:left + 224].permute(0, 2, 3, 1).numpy()


# --- (c) the real videos --------------------------------------------------------------------------
def test_real_videos_crop_as_torch_does(reference_root):
    torch = pytest.importorskip("torch", reason="torch is needed to compare with its native uint8 kernel")
    videos = sorted((reference_root / "videos").glob("*.mp4"))
    if not videos:
        pytest.skip(f"no .mp4 in {reference_root / 'videos'}")
    for path in videos:
        native = read_video_crops(path, Native)
        crops = read_video_crops(path, get_layout("av-benchmark"))
        assert crops.shape == (len(native), 224, 224, 3) and len(native) >= 200
        np.testing.assert_array_equal(crops, torch_preset(torch, native), err_msg=path.name)
