"""Training: grid arithmetic matches the runtime's segments, losses fall, runs resume, metrics."""
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sync_sdk import geometry  # noqa: E402
from sync_sdk.config import ModelConfig  # noqa: E402
from sync_sdk.errors import TrainingError  # noqa: E402
from sync_sdk.geometry import OFFSET_GRID_SEC, class_to_offset  # noqa: E402
from sync_sdk.model import build_model  # noqa: E402
from sync_sdk.weights.checkpoint import load_checkpoint  # noqa: E402
from sync_training import data, encoder_init, features, head, stage1  # noqa: E402
from sync_training.loop import Schedule, train_stage  # noqa: E402
from sync_training.losses import info_nce  # noqa: E402
from sync_training.metrics import offset_accuracy, roc_auc, sync_accuracy  # noqa: E402
from sync_training.recipe import TrainConfig, stalled, train  # noqa: E402


def test_grid_windows_are_the_runtime_segments_at_each_offset():
    """Cached audio segment j starts at world sample AUDIO_ORIGIN + 640 j; window (w, c) must use
    exactly the samples the runtime cuts for grid segment w+s at offset class c."""
    w = np.array([0, 3, 17])
    for c in range(len(OFFSET_GRID_SEC)):
        g, j = data.window_indices(w, np.full(3, c), 14)
        for gi, ji in zip(g.ravel(), j.ravel()):
            assert geometry.segment_frame(gi) == data.FIRST_FRAME + 8 * gi
            start = geometry.segment_sample(gi, geometry.offset_samples(class_to_offset(c)))
            assert data.AUDIO_ORIGIN + data.AUDIO_GRID * ji == start


def test_long_clip_covers_every_window_and_offset():
    clip = data.long_clip(5, n_video=16)
    g, j = data.window_indices(np.array([0, 2]), np.array([0, 20]), 14)
    assert g.max() < clip.n_video and j.min() >= 0 and j.max() < clip.n_audio
    assert clip.frames.shape == (data.FIRST_FRAME + 8 * 15 + 16, 224, 224, 3)
    assert len(clip.audio) == data.AUDIO_GRID * (clip.n_audio - 1) + data.SEG_SAMPLES


def test_event_targets_mark_the_scene_events_in_both_streams():
    """A visual token (two frames) holding an event's frame scores high, one 5+ frames from every
    event scores ~0; the same for audio tokens (16 spectrogram frames) around the event's sound."""
    clip = data.long_clip(5, n_video=16)
    vt, at = clip.visual_event_targets(), clip.audio_event_targets()
    assert vt.shape == (16, 8) and at.shape == (clip.n_audio, 6)
    event_frames = np.round(clip.event_times * data.FPS).astype(int)
    first = data.FIRST_FRAME + 8 * np.arange(16)[:, None] + 2 * np.arange(8)     # each token's first frame
    dist = np.min(np.abs(np.stack([first, first + 1], -1)[..., None] - event_frames), axis=(-1, -2))
    assert (dist == 0).sum() >= 3, "seed 5 has events inside the clip"
    assert vt[dist == 0].min() > 0.7 and vt[dist >= 5].max() < 0.01
    # audio token u of grid segment j spans world samples AUDIO_ORIGIN + 640 j + 1600 u + [0, 2560)
    start = data.AUDIO_ORIGIN + data.AUDIO_GRID * np.arange(clip.n_audio)[:, None] + 1600 * np.arange(6)
    centre_sec = (start + 1280) / 16000
    adist = np.min(np.abs(centre_sec[..., None] - clip.event_times), axis=-1)
    assert at[adist < 0.02].min() > 0.9 and at[adist > 0.3].max() < 0.01
    assert 0.05 < (at > 0.5).mean() < 0.5


def test_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    score, label = rng.random(60).round(1), rng.random(60) < 0.4
    pairs = [(p > n) + 0.5 * (p == n) for p in score[label] for n in score[~label]]
    assert roc_auc(score, label) == pytest.approx(np.mean(pairs))
    assert sync_accuracy(np.array([0.9, 0.2, 0.7, 0.6]), np.array([1, 1, 0, 0])) == pytest.approx(0.25)
    assert offset_accuracy(np.array([3, 4, 9]), np.array([3, 5, 7])) == {"acc1": 1 / 3, "acc1_pm1": 2 / 3}


def test_info_nce_prefers_matching_pairs():
    v = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    scale = torch.tensor(np.log(10.0))
    assert info_nce(v, v, scale) < info_nce(v, v.roll(1, 0), scale)


def test_motion_init_sees_change_not_stillness():
    model = encoder_init.init_weights(build_model("tiny"), 0)
    conv = model.vfeat_extractor.patch_embed_3d.proj
    still = torch.rand(1, 3, 1, 16, 16).expand(1, 3, 2, 16, 16)
    n_diff = int(conv.weight.shape[0] * 0.625)
    out = conv(still).flatten()
    assert torch.allclose(out[:n_diff], torch.zeros(n_diff), atol=1e-5) and out[n_diff:].abs().max() > 0
    flash = torch.cat([still[:, :, :1], still[:, :, :1] + 0.5], 2)  # frame 2 brighter by 0.5
    assert conv(flash).flatten()[:3].sub(8.0).abs().max() < 1e-4  # mean-change channels: 16 * 0.5
    assert out[-1] == conv(flash).flatten()[-1] == encoder_init.ENERGY_REFERENCE_BIAS  # the constant channel


def test_energy_reference_channel_reads_low_where_the_picture_changes():
    """Backbone tokens (after its LayerNorm): the constant channel is lower in changing patches than
    in still ones, whichever way the change goes."""
    model = encoder_init.init_weights(build_model("tiny"), 0)
    rng = np.random.default_rng(0)
    still = torch.from_numpy(rng.uniform(-0.5, 0.5, (1, 1, 3, 224, 224)).astype(np.float32)).repeat(1, 16, 1, 1, 1)
    video = still.clone()
    video[:, 1::2, :, :, :112] += 0.4    # left half brighter in every second frame
    video[:, 1::2, :, :112, 112:] -= 0.4  # top right darker
    with torch.no_grad():
        ref = model.vfeat_extractor.tokens(video)[0, :, -1].reshape(8, 14, 14)
    changing, quiet = torch.cat([ref[:, :, :7].flatten(), ref[:, :7, 7:].flatten()]), ref[:, 7:, 7:].flatten()
    assert changing.max() < quiet.min()


def test_boundary_init_sees_a_change_between_tubelets():
    """A patch lit from frame 4 on (tubelets hold frames 2t, 2t+1, so nothing changes inside any):
    the first block's time attention compares token t with token t-1, so the energy reference
    channel reads low at token 2 of that patch only; without it the change is invisible."""
    rng = np.random.default_rng(0)
    video = torch.from_numpy(rng.uniform(-1, 1, (1, 1, 3, 224, 224)).astype(np.float32)).repeat(1, 16, 1, 1, 1)
    video += torch.from_numpy(rng.normal(0, 0.03, video.shape).astype(np.float32))
    video[:, 4:, :, 64:128, 64:128] += 1.0
    for boundary in (True, False):
        model = encoder_init.init_weights(build_model("tiny"), 0)
        if not boundary:
            torch.nn.init.zeros_(model.vfeat_extractor.blocks[0].timeattn.proj.weight)
        with torch.no_grad():
            ref = model.vfeat_extractor.tokens(video)[0, :, -1].reshape(8, 14, 14)
        onset, lit_later, quiet = ref[2, 4:8, 4:8], ref[3:, 4:8, 4:8], ref[:, 9:, 9:]
        assert (onset.max() < quiet.min()) == boundary
        assert (lit_later.min() > onset.max()) == boundary  # the onset, not the lit stretch


def _bank(model, clips: list) -> stage1.ClipBank:
    return stage1.ClipBank([stage1.visual_tokens(model, c) for c in clips], [c.log_mels() for c in clips],
                           [c.visual_event_targets() for c in clips], [c.audio_event_targets() for c in clips])


def test_stage1_steps_lower_the_contrastive_loss():
    """Contrastive steps on one fixed batch of real synthetic windows from a two-clip bank."""
    torch.manual_seed(0)
    cfg = ModelConfig.named("tiny")
    model = encoder_init.init_weights(build_model(cfg), 0).train()
    clips = [data.long_clip(s, n_video=15) for s in (101, 102)]
    bank = _bank(model, clips)
    tokens, aud, shifted = bank.stage1_batch(np.random.default_rng(0), 2, 14, np.arange(2))
    assert tokens[0].shape == (14, 1568, 64) and aud.shape == (2, 14, 1, 128, 66)
    assert shifted.shape == (2, 14, len(stage1.STAGE1_SHIFTS), 1, 128, 66)
    with torch.no_grad():  # the bank reproduces encode_video / the audio the runtime would cut
        ref = model.encode_video(torch.from_numpy(data.video_segments(clips[0].frames, clips[0].video_firsts()[:2])))
        assert torch.allclose(stage1.aggregate(model, bank.tokens[0][:2]), ref, atol=1e-2)
    w0 = clips[0].audio_firsts()[data.in_sync_rows(np.array([3]), np.array([0]))[0, 0]]
    assert data.AUDIO_ORIGIN + w0 == geometry.segment_sample(3)
    proj = stage1.SegmentProjector(cfg)
    opt = torch.optim.AdamW(stage1.stage1_parameters(model) + list(proj.parameters()), lr=2e-3)
    losses = []
    for _ in range(10):
        v, a, a_extra = stage1.stage1_embed(model, proj, tokens, aud, shifted)
        loss = info_nce(v, a, proj.logit_scale, a_extra)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_event_stage_lowers_its_loss_and_scores_events():
    """Event-detection steps on one fixed batch from a two-clip bank; then the probes rank event
    tokens of that bank above quiet ones."""
    torch.manual_seed(0)
    cfg = ModelConfig.named("tiny")
    model = encoder_init.init_weights(build_model(cfg), 0).train()
    clips = [data.long_clip(s, n_video=6) for s in (101, 102)]
    bank = _bank(model, clips)
    batch = bank.event_batch(np.random.default_rng(0), np.arange(2), n_clips=2, n_video=6, n_audio=48)
    assert batch[0].shape == (12, 1568, 64) and batch[1].shape == (12, 8) and batch[2].shape == (96, 1, 128, 66)
    probes = stage1.EventProbes(cfg)
    opt = torch.optim.AdamW(stage1.stage1_parameters(model) + list(probes.parameters()), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = stage1.event_loss(model, probes, *batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]
    auc = stage1.event_auc(model.eval(), probes, bank, np.arange(2), audio_stride=1)
    assert auc["visual_event_auc"] > 0.7 and auc["audio_event_auc"] > 0.7


def test_curriculum_starts_coarse_and_ends_with_every_class():
    assert head.curriculum_classes(0, 1000).tolist() == [0, 20]
    assert head.curriculum_classes(250, 1000).tolist() == [0, 5, 10, 15, 20]
    assert head.curriculum_classes(400, 1000).tolist() == list(range(21))
    assert head.curriculum_classes(999, 1000).tolist() == list(range(21))
    sizes = [len(head.curriculum_classes(i, 100)) for i in range(100)]
    assert sizes == sorted(sizes)


def test_init_head_codes_time_and_fades_clip_constants():
    """Visual and audio tokens of the same moment get the same time code; the fitted projection
    keeps a feature's within-clip variation and drops what is constant per clip."""
    model = encoder_init.init_weights(build_model("tiny"), 0)
    rng = np.random.default_rng(0)
    m, g, j = 12, 20, 30
    event_dir = rng.standard_normal(64)
    clip_const = rng.standard_normal((m, 1, 1, 64)) * 5                     # large, per clip
    vfeat = clip_const + rng.standard_normal((m, g, 8, 1)) * event_dir + 0.05 * rng.standard_normal((m, g, 8, 64))
    afeat = rng.standard_normal((m, j, 6, 48))
    head.init_head_(model, torch.tensor(vfeat, dtype=torch.float32), torch.tensor(afeat, dtype=torch.float32))
    tv, ta = head.head_token_times(14)
    pos = model.transformer.pos_emb_cfg.pos_emb.detach()[0, :, :head.HEAD_TIME_COLUMNS]
    gap = np.abs(tv[:, None] - ta[None, :])                                # (112, 84) seconds apart
    dist = torch.cdist(pos[1:1 + len(tv)], pos[2 + len(tv):]).numpy()      # distance of their codes
    assert (gap < 0.02).sum() > 10
    assert dist[gap < 0.02].max() < 0.5 < 1.0 < dist[gap > 0.5].min()
    full = model.transformer.pos_emb_cfg.pos_emb.detach()
    assert full[0, :, head.HEAD_TIME_COLUMNS:].abs().max() == 0 and full[0, 0].abs().max() == 0
    assert model.transformer.OFF_tok.abs().max() == 0
    assert model.transformer.blocks[0].attn.qkv.weight.std() > 0.1  # default scale, not ViT's 0.02
    with torch.no_grad():
        out = model.vproj(torch.tensor(vfeat.reshape(-1, 64), dtype=torch.float32)).reshape(m, -1, 32).double()
    assert torch.allclose(out[..., -1], torch.full_like(out[..., -1], head.HEAD_REFERENCE_BIAS), atol=1e-4)
    top = out[..., 0]
    within = (top - top.mean(1, keepdim=True)).std()
    between = top.mean(1).std()
    assert within > 20 * between   # the event direction survives, the clip constant does not


def test_projection_init_wider_than_the_features():
    """A head wider than the features (64 > 48): as many fitted rows as feature dimensions, the
    rest zero, and the last row still the constant reference."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 64)
    feats = torch.randn(6, 20, 6, 48) + 3 * torch.randn(6, 1, 1, 48)
    head.projection_init_(lin, feats)
    w = lin.weight.detach()
    assert (w[:48].norm(dim=1) > 0).all() and (w[48:].abs().max() == 0)
    out = lin(feats.reshape(-1, 48)).detach()
    assert torch.allclose(out[:, -1], torch.full_like(out[:, -1], head.HEAD_REFERENCE_BIAS))
    assert out[:, 48:-1].abs().max() == 0


def test_lag_maps_point_at_the_true_offset():
    """Events 4.5 s apart (no other event within the +-4 s any two offsets differ by): at a visual
    event token, the lag map peaks at the window's true class wherever that class puts the token's
    sound inside the window's audio, and stays near 0 at every other class."""
    n_video = 30
    n_audio = data.SEG_PER_STEP * (n_video - 1) + data.GRID_PER_CLASS * 20 + 1
    clip = data.LongClip(None, None, n_video, n_audio, np.array([0.6, 5.16, 9.8]))
    feats = features.GridFeatureSet(torch.zeros(1, n_video, 8, 4), torch.zeros(1, n_audio, 6, 4),
                                    clip.visual_event_targets()[None], clip.audio_event_targets()[None])
    v, a, c, vweight, lag = feats.sample_offsets_with_lags(np.random.default_rng(0), 256, 14, np.array([0]))
    assert v.shape == (256, 112, 4) and a.shape == (256, 84, 4) and lag.shape == (256, 112, 21)
    b, i = torch.nonzero(vweight > 0.8, as_tuple=True)
    inside = torch.from_numpy(data.lag_geometry(14)[1])[i, c[b]]
    assert len(b) > 300 and inside.float().mean() > 0.6
    rows, true = lag[b, i][inside], c[b][inside]
    assert (rows.argmax(-1) == true).all() and rows[torch.arange(len(true)), true].min() > 0.6
    rows[torch.arange(len(true)), true] = 0
    assert rows.max() < 0.1
    with pytest.raises(ValueError, match="event targets"):
        features.GridFeatureSet(feats.vfeat, feats.afeat).sample_offsets_with_lags(
            np.random.default_rng(0), 2, 14, np.array([0]))


def test_token_windows_draw_tokens_that_fit_each_position():
    """Token features that hold their own target: every drawn visual token's target is in the bin
    of its position's closeness to a drawn event (vweight); at a visual event, the lag map is high at
    the true class and the audio token where that sound lands was drawn from an event bin."""
    from sync_training.token_windows import BIN_EDGES, TokenWindows
    rng = np.random.default_rng(0)
    vt = rng.choice([0.0, 0.1, 0.5, 0.9], (3, 40, 8)).astype(np.float32)
    at = rng.choice([0.0, 0.1, 0.5, 0.9], (3, 300, 6)).astype(np.float32)
    feats = features.GridFeatureSet(torch.from_numpy(vt)[..., None].repeat(1, 1, 1, 4),
                                    torch.from_numpy(at)[..., None].repeat(1, 1, 1, 3), vt, at)
    windows = TokenWindows(feats, np.array([1, 2]), 14)
    v, a, c, vweight, lag = windows.sample(np.random.default_rng(1), 32, np.arange(21))
    assert v.shape == (32, 112, 4) and a.shape == (32, 84, 3) and lag.shape == (32, 112, 21)
    assert np.array_equal(np.digitize(v[..., 0].numpy(), BIN_EDGES), np.digitize(vweight.numpy(), BIN_EDGES))
    b, i = torch.nonzero(vweight > 0.8, as_tuple=True)
    audio_token, inside = (torch.from_numpy(x)[i, c[b]] for x in data.lag_geometry(14))
    assert len(b) > 50 and lag[b, i, c[b]][inside].min() > 0.8
    # the audio token where a visual event's sound lands (true class) was drawn from an event bin
    assert a[b, audio_token, 0][inside].min() >= 0.5
    with pytest.raises(ValueError, match="event targets"):
        TokenWindows(features.GridFeatureSet(feats.vfeat, feats.afeat), np.array([0]), 14)


def test_token_windows_jitter_offsets_within_the_class_bin():
    """jitter_sec: each window's audio sits anywhere in its class's 0.2-s bin, so at a token right at
    a visual event (20 ms: events fall on frame edges, tokens on frame pairs' centres) the true
    class's lag map falls from 0.95 to as low as 0.14; jitter 0 draws the same windows as before."""
    from sync_training.token_windows import TokenWindows
    rng = np.random.default_rng(0)
    vt = rng.choice([0.0, 0.1, 0.5, 0.9], (3, 40, 8)).astype(np.float32)
    at = rng.choice([0.0, 0.1, 0.5, 0.9], (3, 300, 6)).astype(np.float32)
    feats = features.GridFeatureSet(torch.from_numpy(vt)[..., None], torch.from_numpy(at)[..., None], vt, at)
    windows = TokenWindows(feats, np.array([1, 2]), 14)
    plain = windows.sample(np.random.default_rng(1), 32, np.arange(21))
    assert all(torch.equal(x, y) for x, y in zip(plain, windows.sample(np.random.default_rng(1), 32, np.arange(21), 0.0)))
    _, inside = data.lag_geometry(14)
    for jitter, lo, hi in ((0.0, 0.94, 0.0), (0.1, 0.13, 0.5)):
        _, _, c, vweight, lag = windows.sample(np.random.default_rng(2), 256, np.arange(21), jitter)
        b, i = torch.nonzero(vweight > 0.85, as_tuple=True)  # tokens 20 ms from a visual event
        true = lag[b, i, c[b]][torch.from_numpy(inside)[i, c[b]]]
        assert len(true) > 100 and true.min() >= lo
        assert float((true < 0.9).float().mean()) >= hi  # more than 28 ms off: most jittered windows


def test_token_windows_share_one_event_density_per_batch():
    """All windows of a batch are drawn at one density, and the density differs between batches: a
    sparse batch holds fewer visual event tokens."""
    from sync_training.token_windows import TokenWindows
    vt = np.zeros((2, 40, 8), np.float32)
    vt[:, ::3] = 0.9
    at = np.zeros((2, 300, 6), np.float32)
    at[:, ::3] = 0.9
    feats = features.GridFeatureSet(torch.zeros(2, 40, 8, 4), torch.zeros(2, 300, 6, 3), vt, at)
    seen = []
    windows = TokenWindows(feats, np.array([0, 1]), 14)
    draw = windows._events
    windows._events = lambda rng, d: seen.append(d) or draw(rng, d)
    for seed in range(4):
        windows.sample(np.random.default_rng(seed), 16, np.arange(21))
    per_batch = np.array(seen).reshape(4, 16)
    assert np.all(per_batch == per_batch[:, :1]) and len(np.unique(per_batch[:, 0])) == 4
    sparse, dense = (TokenWindows(feats, np.array([0, 1]), 14, (d, d)) for d in (0.0, 1.0))
    counts = [float((w.sample(np.random.default_rng(5), 64, np.arange(21))[3] > 0.5).sum())
              for w in (sparse, dense)]
    assert 3 * counts[0] < counts[1]


def test_real_video_windows_keep_the_bank_video_and_redraw_the_audio():
    """sample_real_video: the visual tokens, classes, vweight and lag maps are those of the bank
    window that sample_offsets_with_lags draws from the same seed; each audio token comes from the
    pool of its real target's closeness bin and is (mostly) not the bank's own token."""
    from sync_training.token_windows import BIN_EDGES, TokenWindows
    rng = np.random.default_rng(0)
    vt = rng.choice([0.0, 0.1, 0.5, 0.9], (3, 40, 8)).astype(np.float32)
    at = rng.choice([0.0, 0.1, 0.5, 0.9], (3, 413, 6)).astype(np.float32)
    ident = lambda t: torch.from_numpy(np.stack([t, np.arange(t.size).reshape(t.shape)], -1)).float()  # noqa: E731
    feats = features.GridFeatureSet(ident(vt), ident(at), vt, at)
    clips = np.array([1, 2])
    windows = TokenWindows(feats, clips, 14)
    v, a, c, vweight, lag = windows.sample_real_video(np.random.default_rng(3), 32, np.arange(21))
    rv, ra, rc, rweight, rlag = feats.sample_offsets_with_lags(np.random.default_rng(3), 32, 14, clips)
    for got, ref in ((v, rv), (c, rc), (vweight, rweight), (lag, rlag)):
        assert torch.equal(got, ref)
    assert np.array_equal(np.digitize(a[..., 0].numpy(), BIN_EDGES), np.digitize(ra[..., 0].numpy(), BIN_EDGES))
    assert (a[..., 1] == ra[..., 1]).float().mean() < 0.05
    own = set(ident(at)[clips, ..., 1].flatten().tolist())
    assert set(a[..., 1].flatten().tolist()) <= own  # drawn from the training clips' tokens only


def _clip_id_feats(groups, n_video=40, n_audio=413):
    """Features whose channel 0 holds the clip index, with random event targets."""
    rng = np.random.default_rng(0)
    m = len(groups)
    vt = rng.choice([0.0, 0.5, 0.9], (m, n_video, 8)).astype(np.float32)
    at = rng.choice([0.0, 0.5, 0.9], (m, n_audio, 6)).astype(np.float32)
    clip_id = lambda shape: torch.arange(m, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(*shape, 2)  # noqa: E731
    return features.GridFeatureSet(clip_id(vt.shape), clip_id(at.shape), vt, at, groups)


def test_grid_window_jitter_moves_the_audio_within_the_cache():
    """jitter: U{-2..2} audio rows (recipe.jitter_rows(0.08) = 2), clipped where the window would
    leave the cached audio (class 0 at the first segment, class 20 at the last); the windows and
    lag maps follow the moved audio rows; rows = 0 draws nothing, so a recipe without jitter keeps
    its window stream."""
    from sync_training.recipe import jitter_rows
    assert jitter_rows(0.08) == 2 and jitter_rows(0.1) == 2 and jitter_rows(0.0) == 0
    feats = _clip_id_feats(np.zeros(2))
    w, c = np.array([0, 0, 26, 26] * 50), np.array([0, 20, 0, 20] * 50)
    u = feats.jitter(np.random.default_rng(0), w, c, 14, 2)
    _, j = data.window_indices(w, c, 14, u)
    assert j.min() >= 0 and j.max() < feats.afeat.shape[1]
    assert set(u[w + c == 0]) == {0, 1, 2} and set(u[(w == 26) & (c == 20)]) == {-2, -1, 0}
    assert set(u[(w == 26) & (c == 0)]) == {-2, -1, 0, 1, 2}
    rng = np.random.default_rng(3)
    assert feats.jitter(rng, w, c, 14, 0) is None and rng.integers(1 << 30) == np.random.default_rng(3).integers(1 << 30)
    v, a, target, cls, vweight, lag = feats.sample_syncability_with_lags(np.random.default_rng(4), 64, 13,
                                                                         np.arange(2), jitter_rows=2)
    rng = np.random.default_rng(4)
    m, w, c, t, audio_clip = feats.draw_syncability(rng, 64, 13, np.arange(2))
    u = feats.jitter(rng, w, c, 13, 2)
    _, j = data.window_indices(w, c, 13, u)
    assert np.any(u != 0) and np.array_equal(cls.numpy(), c)
    assert torch.equal(lag, features.lag_maps(feats.atargets[m[:, None], j].flatten(1), 13))


def test_real_video_windows_can_come_from_other_clips_than_the_token_pools():
    """video_clips (the recipe's extra clips): the visual windows come from them, the audio tokens
    still from the pools of `clips`."""
    from sync_training.token_windows import TokenWindows
    feats = _clip_id_feats(np.zeros(3))
    windows = TokenWindows(feats, np.array([0, 1]), 14, video_clips=np.array([2]))
    v, a, *_ = windows.sample_real_video(np.random.default_rng(1), 16, np.arange(21))
    assert torch.all(v == 2) and set(a.flatten().tolist()) == {0.0, 1.0}
    rng = np.random.default_rng(2)
    assert torch.all(TokenWindows(feats, np.array([1]), 14).sample_real_video(rng, 4, np.arange(21))[0] == 1)


def test_no_overlap_windows_take_audio_of_another_clip_of_the_same_kind():
    """draw_syncability: half the windows keep their own audio; the others take another clip's audio,
    of the same group wherever `clips` holds one (clip 4 is alone in its group: any other clip)."""
    groups = np.array(["mixed", "mixed", "beep_flash", "beep_flash", "other"])
    feats = _clip_id_feats(groups)
    v, a, target = feats.sample_syncability(np.random.default_rng(1), 512, 13, np.arange(5))
    own, heard = v[:, 0, 0].long().numpy(), a[:, 0, 0].long().numpy()
    assert torch.all(a[..., 0] == a[:, :1, 0]) and 0.4 < target.float().mean() < 0.6
    pos = target.numpy() == 1
    assert np.array_equal(heard[pos], own[pos]) and np.all(heard[~pos] != own[~pos])
    paired = ~pos & (own != 4)
    assert np.array_equal(groups[heard[paired]], groups[own[paired]])
    assert np.any(~pos & (own == 4))
    assert len(set(heard[~pos & (own == 4)])) > 1
    with pytest.raises(ValueError, match="one per clip"):
        features.GridFeatureSet(feats.vfeat, feats.afeat, groups=groups[:3])


def test_syncability_windows_carry_lag_maps_of_their_positives():
    """sample_syncability_with_lags: the same windows as sample_syncability; vweight is the bank's
    visual targets on synchronizable windows and 0 on the others; lag maps follow the own audio."""
    feats = _clip_id_feats(np.array([0, 0, 1, 1]))
    clips = np.arange(4)
    v, a, target, c, vweight, lag = feats.sample_syncability_with_lags(np.random.default_rng(2), 64, 13, clips)
    rv, ra, rt = feats.sample_syncability(np.random.default_rng(2), 64, 13, clips)
    assert torch.equal(v, rv) and torch.equal(a, ra) and torch.equal(target, rt)
    m, w, c_ref, _, _ = feats.draw_syncability(np.random.default_rng(2), 64, 13, clips)
    g, j = data.window_indices(w, c_ref, 13)
    assert np.array_equal(c.numpy(), c_ref)
    assert torch.equal(vweight, feats.vtargets[m[:, None], g].flatten(1) * target[:, None])
    assert torch.equal(lag, features.lag_maps(feats.atargets[m[:, None], j].flatten(1), 13))
    with pytest.raises(ValueError, match="event targets"):
        features.GridFeatureSet(feats.vfeat, feats.afeat).sample_syncability_with_lags(
            np.random.default_rng(0), 4, 13, clips)


def test_syncability_model_keeps_each_tokens_position():
    """syncability_model: the 13-segment head's positional rows are the 14-segment head's rows of the
    same tokens (OFF, the first 13 segments' visual tokens, MOD, their audio tokens), not its first
    184 rows; every other weight is copied, the sync head is new."""
    from sync_training.recipe import syncability_model
    sync_model = encoder_init.init_weights(build_model("tiny"), 0)
    table = sync_model.transformer.pos_emb_cfg.pos_emb
    torch.nn.init.normal_(table)
    model = syncability_model(sync_model, 0)
    rows = model.transformer.pos_emb_cfg.pos_emb[0]
    assert rows.shape[0] == 2 + 13 * 14
    assert torch.equal(rows[0], table[0, 0])                          # OFF
    assert torch.equal(rows[1:105], table[0, 1:105])                  # visual tokens of segments 0-12
    assert torch.equal(rows[105], table[0, 113])                      # MOD
    assert torch.equal(rows[106:], table[0, 114:114 + 78])            # audio tokens of segments 0-12
    query = lambda m: m.transformer.blocks[0].attn.qkv.weight  # noqa: E731
    assert torch.equal(query(model), query(sync_model))
    assert model.transformer.sync_head.weight.shape == (2, model.config.h_dim)


def test_stage3_loss_keeps_the_offset_losses_on_positives_only():
    """syncability_and_offset_loss: logits equal the model's head; the offset cross-entropy is that
    of the offset probe on the positives' OFF token (0 when there are none); the lag loss counts
    where vweight > 0."""
    torch.manual_seed(0)
    from sync_training.recipe import offset_probe_from, syncability_model
    sync_model = encoder_init.init_weights(build_model("tiny"), 0)
    model = syncability_model(sync_model, 0)
    off, lag_probe = offset_probe_from(sync_model), head.LagProbe(model.config)
    v, a = torch.randn(8, 104, 64), torch.randn(8, 78, 48)
    target, c = torch.tensor([1, 0, 1, 0, 1, 1, 0, 0]), torch.arange(8)
    vweight, lag = torch.rand(8, 104) * target[:, None], (torch.rand(8, 104, 21) > 0.8).float()
    logits, offset_ce, lag_loss = head.syncability_and_offset_loss(model, off, lag_probe, v, a, target, c,
                                                                   vweight, lag)
    assert logits.shape == (8, 2) and torch.allclose(logits, model.head(v, a), atol=1e-6)
    tokens = model.transformer.tokens(model.vproj(v), model.aproj(a))
    pos = target == 1
    ref = torch.nn.functional.cross_entropy(off(tokens[pos, 0]), c[pos])
    assert torch.allclose(offset_ce, ref, atol=1e-6) and lag_loss > 0
    none = head.syncability_and_offset_loss(model, off, lag_probe, v, a, torch.zeros(8, dtype=torch.long), c,
                                            vweight * 0, lag)
    assert none[1].item() == 0.0 and none[2].item() == 0.0
    assert torch.equal(off.weight, sync_model.transformer.off_head.weight)


def test_lag_loss_trains_the_probe_and_the_head():
    """offset_and_lag_loss: logits equal model.head's; a few steps on a fixed batch lower the lag loss."""
    torch.manual_seed(0)
    model = encoder_init.init_weights(build_model("tiny"), 0)
    probe = head.LagProbe(model.config)
    v, a = torch.randn(8, 112, 64), torch.randn(8, 84, 48)
    vweight, lag = torch.rand(8, 112), (torch.rand(8, 112, 21) > 0.8).float()
    logits, first = head.offset_and_lag_loss(model, probe, v, a, vweight, lag)
    assert torch.allclose(logits, model.head(v, a), atol=1e-6)
    opt = torch.optim.Adam(head.head_parameters(model) + list(probe.parameters()), 3e-3)
    for _ in range(20):
        loss = head.offset_and_lag_loss(model, probe, v, a, vweight, lag)[1]
        opt.zero_grad(), loss.backward(), opt.step()
    assert loss.item() < 0.8 * first.item()


def test_schedule_warms_up_then_holds_then_decays():
    cosine, flat = Schedule(100, 1e-3, warmup=10), Schedule(100, 1e-3, warmup=10, decay_from=100)
    held = Schedule(100, 1e-3, warmup=10, decay_from=60, floor=0.0)
    assert cosine.lr_at(0) == flat.lr_at(0) == held.lr_at(0) == 1e-4
    assert cosine.lr_at(10) == flat.lr_at(10) == held.lr_at(10) == 1e-3
    assert cosine.lr_at(99) == pytest.approx(5e-5, rel=0.01) and flat.lr_at(99) == 1e-3
    assert held.lr_at(59) == held.lr_at(60) == 1e-3 and cosine.lr_at(59) < 1e-3
    assert held.lr_at(80) == pytest.approx(5e-4) and 0 < held.lr_at(99) < 2e-6
    jump = Schedule(100, 1e-3, warmup=10, decay_from=60, floor=0.0, decay_lr=4e-3)  # stage 2's real-video phase
    assert jump.lr_at(59) == 1e-3 and jump.lr_at(60) == 4e-3 and jump.lr_at(80) == pytest.approx(2e-3)


def test_head_training_resumes(tmp_path):
    """train_stage: the loss falls on a fixed batch; a second call continues from the saved step."""
    torch.manual_seed(0)
    model = encoder_init.init_weights(build_model("tiny"), 0)
    feats = features.GridFeatureSet(np.random.default_rng(0).standard_normal((3, 20, 8, 64), np.float32),
                                    np.random.default_rng(1).standard_normal((3, 260, 6, 48), np.float32))
    v, a, target = feats.sample_offsets(np.random.default_rng(2), 16, 14, np.arange(3))

    def step(i):
        return torch.nn.functional.cross_entropy(model.head(v, a), target), {}

    params = head.head_parameters(model)
    first = train_stage("head", tmp_path, {"model": model}, params, Schedule(12, 3e-3, warmup=2, save_every=6), step)
    assert len(first) == 12 and first[-1]["loss"] < 0.85 * first[0]["loss"]
    more = train_stage("head", tmp_path, {"model": model}, params, Schedule(15, 3e-3, warmup=2, save_every=6), step)
    assert len(more) == 15 and more[:12] == first


def tiny_recipe(tmp_path, **settings) -> TrainConfig:
    """A whole recipe run in seconds: 3 short clips, a few steps per stage."""
    settings = {"clips": 3, "extra_clips": 0, **settings}
    return TrainConfig(run_dir=str(tmp_path / "run"), clip_segments=15, val_clips=1, stage1_steps=1, stage1_batch=1,
                       stage2_steps=4, stage2_real_video_steps=2, stage2_batch=8, stage3_steps=3, stage3_batch=8,
                       **settings)


def test_recipe_end_to_end_and_resume(tmp_path, monkeypatch):
    from sync_training import recipe
    from sync_training.token_windows import TokenWindows
    made = []  # (pool clips, video clips) of each TokenWindows the recipe makes
    record = lambda *a, **k: made.append((a[1], k["video_clips"])) or TokenWindows(*a, **k)  # noqa: E731
    monkeypatch.setattr(recipe, "TokenWindows", record)
    cfg = tiny_recipe(tmp_path, bundle=str(tmp_path / "bundle"), extra_clips=1)
    log = train(cfg)
    assert set(log["times"]) == {"bank", "stage1", "features", "extra_clips", "stage2", "stage3"}
    assert [(list(pools), list(video)) for pools, video in made] == [([1, 2], [1, 2, 3])]  # clip 3: extra
    assert 0.0 <= log["metrics"]["val_acc1"] <= log["metrics"]["val_acc1_pm1"] <= 1.0
    assert 0.0 <= log["metrics"]["visual_event_auc"] <= 1.0 and 0.0 <= log["metrics"]["audio_event_auc"] <= 1.0
    sync = load_checkpoint(tmp_path / "bundle" / "model.safetensors")
    sab = load_checkpoint(tmp_path / "bundle" / "synchronizability.safetensors")
    assert sync.config == ModelConfig.named("tiny")
    assert (sab.config.variant, sab.config.n_segments) == ("synchronizability", 13)
    enc = [k for k in sync.state_dict if k.startswith(("vfeat_extractor", "afeat_extractor"))]
    assert all(np.array_equal(sync.state_dict[k], sab.state_dict[k]) for k in enc)
    assert log["final_step"]["stage2"]["step"] == 5  # 4 TokenWindows steps, then 2 on real video windows
    again = train(cfg)  # everything done: nothing retrained, same weights
    assert again["final_step"] == log["final_step"]
    assert np.array_equal(load_checkpoint(tmp_path / "run" / "model.safetensors").state_dict["transformer.off_head.weight"],
                          sync.state_dict["transformer.off_head.weight"])


def test_extra_clips_are_the_clips_a_larger_bank_would_hold(tmp_path):
    """build_extra: clips cfg.clips.. get the seeds, features, targets and kinds that a bank of
    cfg.clips + extra_clips clips gives its last clips through grid_features."""
    from sync_sdk import synthetic
    from sync_training.recipe import bank_seed, build_bank, build_extra
    cfg = tiny_recipe(tmp_path, clips=2, extra_clips=1)
    model = head.freeze_encoders(encoder_init.init_weights(build_model("tiny"), 0))
    extra = build_extra(cfg, model, tmp_path / "run")
    bigger = dataclasses.replace(cfg, clips=3, extra_clips=0)
    kinds = [synthetic.scene_kind(bank_seed(cfg, i)) for i in range(3)]
    ref = features.grid_features(model, build_bank(bigger, model, tmp_path / "bigger"), groups=kinds)
    assert len(extra) == 1 and list(extra.groups) == kinds[2:]
    for got, want in ((extra.vfeat, ref.vfeat), (extra.afeat, ref.afeat), (extra.vtargets, ref.vtargets),
                      (extra.atargets, ref.atargets)):
        assert torch.allclose(got[0], want[2], atol=1e-6)
    assert not torch.allclose(extra.vfeat[0], ref.vfeat[1], atol=1e-3)
    both = ref.extended(extra)
    assert len(both) == 4 and torch.equal(both.afeat[3], extra.afeat[0]) and list(both.groups) == kinds + kinds[2:]
    other = head.freeze_encoders(encoder_init.init_weights(build_model("tiny"), 1))
    with pytest.raises(RuntimeError, match=r"other weights \(encoders.sha256\)"):
        build_extra(cfg, other, tmp_path / "run")  # features of other encoders are not reused


def test_stalled_reads_the_batch_accuracy_at_the_takeoff_step():
    cfg = TrainConfig(run_dir="unused", stage2_steps=12000, stage2_takeoff_step=2000)  # 3 classes at step 2,000
    history = lambda acc, n=2000: [{"acc": acc}] * n  # noqa: E731
    assert stalled(cfg, history(0.45)) and not stalled(cfg, history(0.55))
    assert not stalled(cfg, history(0.45, 1999)) and not stalled(cfg, history(0.45, 2001))
    assert not stalled(dataclasses.replace(cfg, stage2_takeoff_step=0), history(0.45))
    assert not stalled(dataclasses.replace(cfg, stage2_steps=1500), history(0.45))  # past the TokenWindows phase


def test_stage2_sets_aside_a_head_draw_that_stays_at_chance(tmp_path):
    cfg = tiny_recipe(tmp_path, stage2_takeoff_step=2, stage2_takeoff_ratio=100.0, stage2_draws=2)
    with pytest.raises(TrainingError, match="all 2 head draws"):
        train(cfg)
    run = tmp_path / "run"
    first, second = (torch.load(run / f"stage2.draw{k}.state.pt", weights_only=True) for k in (0, 1))
    assert first["step"] == second["step"] == 2
    w = "transformer.off_head.weight"
    assert not torch.equal(first["modules"]["model"][w], second["modules"]["model"][w])
    assert [h["step"] for h in second["history"]] == [0, 1]  # the second draw started again at step 0
    log = train(dataclasses.replace(cfg, stage2_takeoff_ratio=0.0, stage2_draws=3))  # resumes with draw 2
    assert log["stage2_head_draw"] == 2 and len(log["final_step"]) == 3
    assert log["final_step"]["stage2"]["step"] == 5
