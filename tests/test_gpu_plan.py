"""CPU checks of the GPU kernels' host side (sync_sdk.inputs.gpu_plan): tables, geometry, buffer plans, and the
NumPy emulations of kernels/*.cu against the official references and the NumPy feature path."""
import numpy as np
import pytest

from sync_sdk.inputs import gpu_plan as plan

CASE = "3qesirWAGt4_20000_30000_off1.6_start0.0"


@pytest.fixture
def constants(preproc_reference_dir):
    c = np.load(preproc_reference_dir / "constants.npz")
    return {"window": c["stft_window"], "fbanks": c["mel_fbanks"], "lut": c["video_lut"]}


@pytest.fixture
def case(preproc_reference_dir):
    return np.load(preproc_reference_dir / f"{CASE}.npz")


# --------------------------------------------------------------------------------------------- launch
@pytest.mark.parametrize("n, blocks", [(0, 1), (1, 1), (256, 1), (257, 2), (10**9, plan.MAX_BLOCKS)])
def test_grid_1d(n, blocks):
    assert plan.grid_1d(n) == ((blocks,), (plan.BLOCK,))


# --------------------------------------------------------------------------------------------- audio
def test_reflect_index_equals_numpy_reflect_pad():
    n, pad = 10240, 512
    x = np.arange(n)
    padded = np.pad(x, pad, mode="reflect")
    j = np.arange(-pad, n + pad)
    np.testing.assert_array_equal(x[plan.reflect_index(j, n)], padded)


def test_stft_source_index_frames_centre_on_hop():
    idx = plan.stft_source_index()
    assert idx.shape == (plan.N_FRAMES, plan.N_FFT) == (65, 1024)
    assert idx.min() >= 0 and idx.max() < plan.SEG_SAMPLES
    np.testing.assert_array_equal(idx[:64, plan.N_FFT // 2], np.arange(64) * plan.HOP_LENGTH)  # frame k centred on 160k
    assert idx[64, plan.N_FFT // 2] == 10238                                         # 10240 reflected
    np.testing.assert_array_equal(idx[0, :512], np.arange(512, 0, -1))                 # left reflection
    with pytest.raises(ValueError):
        plan.stft_source_index(seg_len=512)


def test_padded_window_is_centred(constants):
    win, lo, hi = plan.padded_window(constants["window"])
    assert (lo, hi) == (312, 712)
    np.testing.assert_array_equal(win[lo:hi], constants["window"])
    assert not win[:lo].any() and not win[hi:].any()


def test_mel_band_table_rebuilds_the_filterbank(constants):
    fb = constants["fbanks"]
    bands = plan.mel_band_table(fb)
    dense = np.zeros_like(fb)
    for m in range(fb.shape[1]):
        lo, ln, off = bands.lo[m], bands.length[m], bands.offset[m]
        dense[lo:lo + ln, m] = bands.weights[off:off + ln]
    np.testing.assert_array_equal(dense, fb)
    assert bands.weights.size < fb.size // 50  # ~1000 of 65664 entries: the point of packing


def test_emulated_log_mel_matches_official_aud(case, constants):
    """Overlapping segments read from the 5-s crop by start index, as the GPU path reads the PCM."""
    starts = 1280 + 5120 * np.arange(14)
    aud = plan.emulate_log_mel(case["audio_crop_5s"], starts, constants["window"], constants["fbanks"])
    np.testing.assert_allclose(aud, case["aud"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(aud[..., -1], 0.4670324, atol=1e-6)  # padded column


def test_emulated_log_mel_matches_numpy_features(constants):
    features = pytest.importorskip("sync_sdk.inputs.cpu")
    rng = np.random.default_rng(0)
    waves = (rng.standard_normal((3, plan.SEG_SAMPLES)) * np.array([[0.0], [1e-3], [0.3]])).astype(np.float32)
    starts = np.arange(3) * plan.SEG_SAMPLES
    got = plan.emulate_log_mel(waves.reshape(-1), starts, constants["window"], constants["fbanks"])
    np.testing.assert_allclose(got, features.log_mel(waves), atol=1e-4, rtol=0)


def test_segment_starts_and_upload_span():
    s = plan.segment_starts([5120, 0, 10240], plan.SEG_SAMPLES, 20480)
    assert s.dtype == np.int64 and plan.upload_span(s, plan.SEG_SAMPLES) == (0, 20480)
    assert plan.upload_span(np.zeros(0, np.int64), 16) == (0, 0)
    for bad in ([-1], [10241]):
        with pytest.raises(ValueError):
            plan.segment_starts(bad, plan.SEG_SAMPLES, 20480)


# --------------------------------------------------------------------------------------------- video
@pytest.mark.parametrize("hw, expected", [((256, 454), (16, 115)), ((256, 340), (16, 58)),
                                          ((256, 341), (16, 58)), ((257, 343), (16, 60)),
                                          ((224, 224), (0, 0))])
def test_centre_crop_offsets_round_half_to_even(hw, expected):
    assert plan.centre_crop_offsets(*hw) == expected


def test_centre_crop_rejects_small_frames():
    with pytest.raises(ValueError):
        plan.centre_crop_offsets(200, 300)


@pytest.mark.parametrize("hw, expected", [((720, 1280), ((256, 455), (256, 454))),
                                          ((1080, 1920), ((256, 455), (256, 454))),
                                          ((1280, 720), ((455, 256), (454, 256))),
                                          ((256, 454), ((256, 454), (256, 454))),
                                          ((100, 100), ((256, 256), (256, 256)))])
def test_resized_shape_follows_media(hw, expected):
    assert plan.resized_shape(*hw) == expected


def test_resize_taps_identity_and_partition_of_unity():
    same = plan.resize_taps(300, 300)
    np.testing.assert_array_equal(same.first, np.arange(300))
    np.testing.assert_array_equal(same.count, 1)   # zero-weight taps are trimmed
    np.testing.assert_array_equal(same.weight, 1.0)
    for n_in, n_out in ((1080, 256), (100, 256), (455, 454)):
        taps = plan.resize_taps(n_in, n_out)
        np.testing.assert_allclose(taps.weight.sum(axis=1), 1.0, atol=1e-6)
        assert (taps.first >= 0).all() and (taps.first + taps.count <= n_in).all()
        assert (taps.weight[np.arange(taps.weight.shape[1]) >= taps.count[:, None]] == 0).all()
    part = plan.resize_taps(1080, 256, lo=16, n=224)
    full = plan.resize_taps(1080, 256)
    np.testing.assert_array_equal(part.first, full.first[16:240])
    np.testing.assert_array_equal(part.weight, full.weight[16:240, :part.weight.shape[1]])


def _blocky_frames(n, h, w, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
    img = np.repeat(np.repeat(base, 16, 1), 16, 2)[:, :h, :w]
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("hw", [(200, 300), (300, 300), (240, 426)])
def test_emulated_resize_matches_media_bicubic(hw):
    """Upscales and mild downscales equal PyAV/swscale's bicubic RGB resize (media.py) within one level."""
    av = pytest.importorskip("av")
    from av.video.reformatter import VideoReformatter
    h, w = hw
    frames = _blocky_frames(2, h, w, seed=1)
    (sh, sw), (oh, ow) = plan.resized_shape(h, w)
    geom = plan.frame_geometry(h, w, resize=True)
    lut = np.arange(256, dtype=np.float32)  # identity table: outputs are the resized uint8 levels
    got = plan.emulate_frames(frames, np.array([1, 0]), lut, geom)
    scaler = VideoReformatter()
    ref = np.stack([scaler.reformat(av.VideoFrame.from_ndarray(f, format="rgb24"), width=sw, height=sh,
                                    interpolation="BICUBIC").to_ndarray()[:oh, :ow] for f in frames[[1, 0]]])
    ref = ref[:, geom.top:geom.top + 224, geom.left:geom.left + 224].transpose(0, 3, 1, 2)
    diff = np.abs(got - ref.astype(np.float32))
    assert got.shape == (2, 3, 224, 224)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.9


def test_emulated_crop_matches_official_frames(case, constants, reference_root):
    """Segment 0 of the official window = frames 2..17 of the file (v_start 0): LUT values bit-exact."""
    av = pytest.importorskip("av")
    with av.open(str(reference_root / "videos" / "3qesirWAGt4_20000_30000.mp4")) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 18:
                break
    frames = np.stack(frames)
    geom = plan.frame_geometry(*frames.shape[1:3], resize=False)
    index = plan.segment_frame_index([2])
    vid = plan.emulate_frames(frames, index, constants["lut"], geom)
    assert vid.dtype == np.float32 and vid.shape == (16, 3, 224, 224)
    np.testing.assert_array_equal(vid[0], case["vid_seg0_frame0"])
    np.testing.assert_allclose(vid.astype(np.float64).mean(axis=(2, 3)), case["vid_mean"][0], atol=1e-6)


def test_emulated_crop_matches_numpy_features(constants):
    features = pytest.importorskip("sync_sdk.inputs.cpu")
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (5, 256, 341, 3), dtype=np.uint8)
    geom = plan.frame_geometry(256, 341, resize=False)
    got = plan.emulate_frames(frames, np.arange(5), constants["lut"], geom)
    np.testing.assert_array_equal(got, features.video_input(frames))


def test_lut_is_exact_in_float16(constants):
    lut = constants["lut"]
    np.testing.assert_array_equal(lut.astype(np.float16).astype(np.float32), lut)


def test_segment_frame_index():
    np.testing.assert_array_equal(plan.segment_frame_index([10, 18], base=10),
                                  np.r_[np.arange(16), np.arange(8, 24)])


# ------------------------------------------------------------------------------------------- buffers
def test_plan_buffers_aligned_and_disjoint():
    shapes = plan.feature_buffers(14, 120 * 224 * 224 * 3, np.float16)
    specs, total = plan.plan_buffers(shapes)
    assert set(specs) == set(shapes) and set(plan.UPLOADED) <= set(specs)
    spans = sorted((s.offset, s.offset + s.nbytes) for s in specs.values())
    assert all(s.offset % plan.ALIGN == 0 for s in specs.values())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert spans[-1][1] <= total < spans[-1][1] + plan.ALIGN
    assert specs["video"].nbytes == 14 * 16 * 3 * 224 * 224 * 2
    assert specs["spec"].shape == (14 * 65, 513) and specs["spec"].dtype == np.complex64
    assert specs["mel"].shape == (14, 1, 128, 66)
