"""The whole recipe: clip bank -> stage 1 -> grid features -> stage 2 -> stage 3, resumable.

Run folder:
  bank/clip_XXXXX.npz       per long clip: frozen-backbone tokens (float16), audio-grid log-mels and
                            the event targets of both streams' tokens
  extra/clip_XXXXX.npz      per extra clip (rendered after stage 1): grid features of both streams
                            and the event targets of their tokens
  stage1.safetensors        model after stage 1 (event detection + contrastive; head untrained)
  model.safetensors         sync model (stage 2): 21-way offset head
  synchronizability.safetensors  synchronizability model (stage 3): 2-way head, 13 segments
  <stage>.state.pt          optimizer / step / history for resuming
  loss_curve.png, train_log.json (settings, seconds per stage, validation metrics)
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sync_sdk import synthetic
from sync_sdk.config import ModelConfig
from sync_sdk.errors import TrainingError
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, NUM_OFFSET_CLASSES, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.model import build_model, load_weights
from sync_sdk.weights.checkpoint import save_checkpoint
from sync_sdk.weights.state_dict_rules import POS_EMB_KEY
from sync_training.data import AUDIO_GRID, long_clip
from sync_training.encoder_init import init_weights
from sync_training.features import GridFeatureSet, clip_features, grid_features
from sync_training.head import (
    LagProbe,
    curriculum_classes,
    freeze_encoders,
    head_parameters,
    init_head_,
    offset_and_lag_loss,
    syncability_and_offset_loss,
)
from sync_training.loop import Schedule, plot_losses, train_stage
from sync_training.losses import classification, info_nce
from sync_training.metrics import offset_accuracy, roc_auc, sync_accuracy
from sync_training.stage1 import (
    ClipBank,
    EventProbes,
    SegmentProjector,
    event_auc,
    event_loss,
    stage1_embed,
    stage1_parameters,
    visual_tokens,
)
from sync_training.token_windows import TokenWindows

SEED_STRIDE = 10_000_000  # training clip seeds: SEED_STRIDE * (seed + 1) + BANK_SEEDS + index
BANK_SEEDS = 1_000_000


@dataclass
class TrainConfig:
    """Every knob of a run (all written to train_log.json). The defaults are the recipe of the
    bundled synthetic-tiny (its MODEL_CARD.md; the experiments behind them:
    docs/synthetic-tiny-experiments.md)."""

    run_dir: str
    model: str = "tiny"
    seed: int = 0
    threads: int = 2
    clips: int = 100               # long synthetic clips in the bank
    clip_segments: int = 60        # visual grid segments per clip (0.32 s each)
    val_clips: int = 8             # bank clips held out of training, for validation
    extra_clips: int = 100         # more long clips, as grid features only, for the real-video phase and stage 3
    stage1_steps: int = 600
    stage1_batch: int = 4          # windows of 14 segments per step
    stage1_lr: float = 1e-3
    stage1_contrastive_weight: float = 1.0  # InfoNCE's weight beside the event-detection loss
    stage2_steps: int = 12000
    stage2_batch: int = 64
    stage2_lr: float = 2e-3           # constant after the warm-up up to stage2_steps
    stage2_lag_weight: float = 5.0  # the lag-map loss's weight beside the offset cross-entropy
    stage2_windows: str = "tokens"  # "tokens": TokenWindows (fresh event trains); "clips": bank windows
    stage2_offset_jitter: float = 0.1  # TokenWindows: offsets up to this far (s) off the class's grid offset
    stage2_real_video_steps: int = 6000  # then real visual windows, fresh audio tokens, ...
    stage2_real_video_lr: float = 6e-3  # ... lr cosine from this to 0
    stage2_real_video_jitter: float = 0.0  # ... each window's audio up to this far (s) off its grid offset
    stage2_takeoff_step: int = 2000   # 0: no check. At this step the head must have left chance ...
    stage2_takeoff_ratio: float = 1.5  # ... (mean batch accuracy of its last 250 steps >= ratio x chance),
    stage2_draws: int = 8             # else stage 2 restarts from a new head draw, at most this many draws
    stage3_steps: int = 3200
    stage3_batch: int = 64
    stage3_lr: float = 6e-3          # cosine to 5 % of this
    stage3_offset_weight: float = 0.25  # stage 2's losses (offset + lag map) kept on the positives
    stage3_offset_jitter: float = 0.0  # each window's audio up to this far (s) off its grid offset
    bundle: str | None = None      # copy the final model files here
    times: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage2_windows not in ("tokens", "clips"):
            raise ValueError(f"stage2_windows must be 'tokens' or 'clips', got {self.stage2_windows!r}")

    def model_config(self) -> ModelConfig:
        return ModelConfig.named(self.model)


def _state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def bank_seed(cfg: TrainConfig, i: int) -> int:
    """Generator seed of bank clip i."""
    return SEED_STRIDE * (cfg.seed + 1) + BANK_SEEDS + i


def _stamped_folder(folder: Path, name: str, params) -> Path:
    """Create folder for files computed with params; refuse one whose stamp (`<name>.sha256`, the
    hash of the weights) says they came from other weights."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / f"{name}.sha256"
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in params)).hexdigest()
    if stamp.exists() and stamp.read_text().strip() != digest:
        raise RuntimeError(f"{folder} holds files made by other weights ({stamp.name}); delete it to rebuild")
    stamp.write_text(digest)
    return folder


def _load_or_make(path: Path, make) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, written first (atomically) from make() -> {name: array} if missing."""
    if not path.exists():
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, **make())
        tmp.replace(path)
    with np.load(path) as z:
        return {key: z[key] for key in z.files}


def build_bank(cfg: TrainConfig, model: torch.nn.Module, run: Path) -> ClipBank:
    """Render the long clips and run the frozen visual backbone once over them (or load them)."""
    bank = _stamped_folder(run / "bank", "backbone", model.vfeat_extractor.parameters())

    def make(i: int) -> dict[str, np.ndarray]:
        clip = long_clip(bank_seed(cfg, i), cfg.clip_segments)
        return dict(tokens=visual_tokens(model, clip).numpy(), mels=clip.log_mels(),
                    vtargets=clip.visual_event_targets(), atargets=clip.audio_event_targets())

    clips = [_load_or_make(bank / f"clip_{i:05d}.npz", lambda i=i: make(i))
             for i in tqdm(range(cfg.clips), desc="bank", mininterval=5.0)]
    return ClipBank([torch.from_numpy(c["tokens"]) for c in clips],
                    *([c[key] for c in clips] for key in ("mels", "vtargets", "atargets")))


def build_extra(cfg: TrainConfig, model: torch.nn.Module, run: Path) -> GridFeatureSet:
    """Grid features (and token targets) of cfg.extra_clips more clips, the bank's clips cfg.clips,
    cfg.clips + 1, ... (same seeds as a larger bank's), through the frozen stage-1 encoders (or load
    them). Only the real-video phase and stage 3 see them: the TokenWindows phase and stage 1 are
    unchanged, and no backbone tokens are stored."""
    extra = _stamped_folder(run / "extra", "encoders", [*model.vfeat_extractor.parameters(),
                                                        *model.afeat_extractor.parameters()])

    def make(i: int) -> dict[str, np.ndarray]:
        clip = long_clip(bank_seed(cfg, i), cfg.clip_segments)
        v, a = clip_features(model, visual_tokens(model, clip), clip.log_mels())
        return dict(v=v.numpy(), a=a.numpy(), vtargets=clip.visual_event_targets(),
                    atargets=clip.audio_event_targets())

    indices = range(cfg.clips, cfg.clips + cfg.extra_clips)
    clips = [_load_or_make(extra / f"clip_{i:05d}.npz", lambda i=i: make(i))
             for i in tqdm(indices, desc="extra clips", mininterval=5.0)]
    return GridFeatureSet(*(torch.from_numpy(np.stack([c[key] for c in clips]))
                            for key in ("v", "a", "vtargets", "atargets")),
                          groups=[synthetic.scene_kind(bank_seed(cfg, i)) for i in indices])


def run_stage1(cfg: TrainConfig, model: torch.nn.Module, bank: ClipBank, run: Path
               ) -> tuple[list[dict], dict[str, float]]:
    """Stage 1; returns its history and the event probes' AUCs on the validation clips."""
    n_seg = model.config.n_segments
    proj = SegmentProjector(model.config)
    probes = EventProbes(model.config)
    torch.manual_seed(cfg.seed)
    train_clips = np.arange(cfg.val_clips, len(bank))

    def step(i: int):
        rng = np.random.default_rng([cfg.seed, 1, i])
        events = event_loss(model, probes, *bank.event_batch(rng, train_clips))
        metrics = {"event": events.item()}
        loss = events
        if cfg.stage1_contrastive_weight > 0:
            tokens, aud, shifted = bank.stage1_batch(rng, cfg.stage1_batch, n_seg, train_clips)
            v, a, a_extra = stage1_embed(model, proj, tokens, aud, shifted)
            contrastive = info_nce(v, a, proj.logit_scale, a_extra)
            loss = loss + cfg.stage1_contrastive_weight * contrastive
            with torch.no_grad():
                metrics.update(contrastive=contrastive.item(),
                               retrieval=float((v @ a.t()).argmax(1).eq(torch.arange(len(v))).float().mean()))
        return loss, metrics

    save = lambda: save_checkpoint(run / "stage1.safetensors", _state_dict(model), model.config)  # noqa: E731
    params = stage1_parameters(model) + list(proj.parameters()) + list(probes.parameters())
    history = train_stage("stage1", run, {"model": model, "proj": proj, "probes": probes}, params,
                          Schedule(cfg.stage1_steps, cfg.stage1_lr, warmup=min(20, cfg.stage1_steps // 5 + 1),
                                   save_every=50), step, save)
    model.eval()
    return history, event_auc(model, probes, bank, np.arange(cfg.val_clips))


def run_stage2(cfg: TrainConfig, model: torch.nn.Module, feats: GridFeatureSet, run: Path
               ) -> tuple[list[dict], LagProbe, int]:
    """Stage 2; returns its history, the trained lag probe and the head draw that took off.

    Whether the head leaves chance depends on its initial draw. Draw 0 is the recipe's (torch's
    generator as `train` left it); a draw still at chance at cfg.stage2_takeoff_step (`stalled`) is
    set aside (`stage2.drawN.state.pt`) and stage 2 starts again from the next one (`draw_seed`),
    the window stream unchanged."""
    train_clips = np.arange(cfg.val_clips, cfg.clips)  # the bank's; the real-video phase adds the extra clips
    n_seg = model.config.n_segments
    windows = TokenWindows(feats, train_clips, n_seg, video_clips=np.arange(cfg.val_clips, len(feats)))
    draw_file = run / "stage2_draw.json"
    draw = json.loads(draw_file.read_text())["draw"] if draw_file.exists() else 0

    def step(i: int):
        rng = np.random.default_rng([cfg.seed, 2, i])
        classes = curriculum_classes(i, cfg.stage2_steps)  # all 21 from 40 % of stage2_steps on
        if i >= cfg.stage2_steps:
            v, a, target, vweight, lag = windows.sample_real_video(rng, cfg.stage2_batch, classes,
                                                                   jitter_rows(cfg.stage2_real_video_jitter))
        elif cfg.stage2_windows == "tokens":
            v, a, target, vweight, lag = windows.sample(rng, cfg.stage2_batch, classes, cfg.stage2_offset_jitter)
        else:
            v, a, target, vweight, lag = feats.sample_offsets_with_lags(rng, cfg.stage2_batch, n_seg,
                                                                        train_clips, classes)
        logits, lag_loss = offset_and_lag_loss(model, probe, v, a, vweight, lag)
        loss, acc = classification(logits, target)
        return loss + cfg.stage2_lag_weight * lag_loss, {"acc": acc, "lag": lag_loss.item()}

    save = lambda: save_checkpoint(run / "model.safetensors", _state_dict(model), model.config)  # noqa: E731
    schedule = Schedule(cfg.stage2_steps + cfg.stage2_real_video_steps, cfg.stage2_lr, warmup=100,
                        weight_decay=0.01, decay_from=cfg.stage2_steps, floor=0.0, save_every=250,
                        decay_lr=cfg.stage2_real_video_lr)
    while True:
        if draw > 0:
            torch.manual_seed(draw_seed(cfg, draw))
        init_head_(model, feats.vfeat[train_clips], feats.afeat[train_clips])  # a resumed run loads its state over it
        probe = LagProbe(model.config)
        history = train_stage("stage2", run, {"model": model, "lag_probe": probe},
                              head_parameters(model) + list(probe.parameters()), schedule, step, save,
                              stop_when=lambda h: stalled(cfg, h))
        if not stalled(cfg, history):
            return history, probe, draw
        (run / "stage2.state.pt").replace(run / f"stage2.draw{draw}.state.pt")
        draw += 1
        draw_file.write_text(json.dumps({"draw": draw}))
        if draw >= cfg.stage2_draws:
            raise TrainingError(f"stage 2 stayed at chance at step {cfg.stage2_takeoff_step} with all {draw} head "
                                f"draws (set aside in {run}/stage2.draw*.state.pt); try another --seed, or more "
                                "--stage2-draws to go on with the next draw")
        tqdm.write(f"stage 2: head draw {draw - 1} still at chance at step {len(history)}; next draw {draw}")


def jitter_rows(seconds: float) -> int:
    """A jitter in seconds as whole audio-grid rows (0.04 s), rounded down: 0.08 -> 2."""
    return int(seconds / (AUDIO_GRID / 16000) + 1e-9)


def draw_seed(cfg: TrainConfig, draw: int) -> int:
    """torch seed of stage 2's head draw `draw` >= 1 (draw 0 uses the generator as `train` left it)."""
    return int(np.random.SeedSequence([cfg.seed, 2, draw]).generate_state(1)[0])


def stalled(cfg: TrainConfig, history: list[dict]) -> bool:
    """True when stage 2's history ends at cfg.stage2_takeoff_step (within the TokenWindows phase)
    and the mean batch accuracy of its last 250 steps is below cfg.stage2_takeoff_ratio x chance
    for the classes drawn then (1/3 with the curriculum of a 12,000-step run at step 2,000)."""
    at = cfg.stage2_takeoff_step
    if not at or at > cfg.stage2_steps or len(history) != at:
        return False
    chance = 1.0 / len(curriculum_classes(at - 1, cfg.stage2_steps))
    return float(np.mean([h["acc"] for h in history[-250:]])) < cfg.stage2_takeoff_ratio * chance


def head_rows(n_from: int, n_to: int) -> np.ndarray:
    """Rows of an n_from-segment head's positional table (OFF, S*8 visual, MOD, S*6 audio) that
    an n_to-segment head's rows stand for: OFF, the first n_to segments' visual rows, MOD and the
    first n_to segments' audio rows. (The official loader cuts the table to its first rows
    instead, which moves MOD and every audio token onto other tokens' positions.)"""
    v_from, v_to = VIDEO_TOKENS_PER_SEGMENT * n_from, VIDEO_TOKENS_PER_SEGMENT * n_to
    return np.r_[0, 1:1 + v_to, 1 + v_from, 2 + v_from:2 + v_from + AUDIO_TOKENS_PER_SEGMENT * n_to]


def syncability_model(sync_model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The 2-class model (13 segments) initialised from the sync model, its positional table taken
    row by row (`head_rows`); sync_head drawn fresh."""
    model = build_model(sync_model.config.with_variant("synchronizability"))
    state = {k: v for k, v in _state_dict(sync_model).items() if not k.startswith("transformer.off_head")}
    state[POS_EMB_KEY] = state[POS_EMB_KEY][:, head_rows(sync_model.config.n_segments, model.config.n_segments)]
    gen = torch.Generator().manual_seed(seed)
    w = model.transformer.sync_head.weight
    state["transformer.sync_head.weight"] = (torch.randn(w.shape, generator=gen) * 0.02).numpy()
    state["transformer.sync_head.bias"] = np.zeros(w.shape[0], np.float32)
    return load_weights(model, state)


def run_stage3(cfg: TrainConfig, model: torch.nn.Module, feats: GridFeatureSet, run: Path,
               offset_probe: torch.nn.Linear, lag_probe: LagProbe) -> list[dict]:
    """Stage 3 from the stage-2 head, on the training clips of the bank and the extra clips, with
    stage 2's off_head (as offset_probe) and lag probe kept training on the synchronizable windows
    (weight cfg.stage3_offset_weight), so that the head keeps matching while it learns to say
    whether anything matches."""
    train_clips = np.arange(cfg.val_clips, len(feats))
    n_seg = model.config.n_segments

    def step(i: int):
        rng = np.random.default_rng([cfg.seed, 3, i])
        v, a, target, c, vweight, lag = feats.sample_syncability_with_lags(rng, cfg.stage3_batch, n_seg, train_clips,
                                                                           jitter_rows(cfg.stage3_offset_jitter))
        logits, offset_ce, lag_loss = syncability_and_offset_loss(model, offset_probe, lag_probe, v, a, target, c,
                                                                  vweight, lag)
        loss, acc = classification(logits, target)
        aux = offset_ce + cfg.stage2_lag_weight * lag_loss
        return loss + cfg.stage3_offset_weight * aux, {"acc": acc, "offset": offset_ce.item(), "lag": lag_loss.item()}

    save = lambda: save_checkpoint(run / "synchronizability.safetensors", _state_dict(model), model.config)  # noqa: E731
    modules = {"model": model, "offset_probe": offset_probe, "lag_probe": lag_probe}
    params = head_parameters(model) + list(offset_probe.parameters()) + list(lag_probe.parameters())
    return train_stage("stage3", run, modules, params,
                       Schedule(cfg.stage3_steps, cfg.stage3_lr, warmup=50, save_every=200), step, save)


def offset_probe_from(sync_model: torch.nn.Module) -> torch.nn.Linear:
    """A copy of the sync model's off_head, for stage 3's offset loss."""
    head = sync_model.transformer.off_head
    probe = torch.nn.Linear(head.in_features, head.out_features)
    probe.load_state_dict(head.state_dict())
    return probe


@torch.no_grad()
def validate(sync_model, sync_ab, feats: GridFeatureSet, clips: np.ndarray, seed: int, n: int = 2048) -> dict:
    """Head metrics on held-out cached clips: offset Acc@1 / +-1 and synchronizability acc / AUC."""
    sync_model.eval()
    out = {}
    rng = np.random.default_rng([seed, 9])
    preds, targets = [], []
    for _ in range(0, n, 256):
        v, a, t = feats.sample_offsets(rng, 256, sync_model.config.n_segments, clips)
        preds.append(sync_model.head(v, a).argmax(1).numpy())
        targets.append(t.numpy())
    out.update({f"val_{k}": v for k, v in offset_accuracy(np.concatenate(preds), np.concatenate(targets)).items()})
    if sync_ab is not None and len(clips) > 1:
        sync_ab.eval()
        scores, labels = [], []
        for _ in range(0, n, 256):
            v, a, t = feats.sample_syncability(rng, 256, sync_ab.config.n_segments, clips)
            scores.append(torch.softmax(sync_ab.head(v, a), 1)[:, 1].numpy())
            labels.append(t.numpy())
        s, lab = np.concatenate(scores), np.concatenate(labels)
        out.update(val_sync_acc=sync_accuracy(s, lab), val_sync_auc=roc_auc(s, lab))
    return out


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) every stage; returns the training log (also written to train_log.json)."""
    torch.set_num_threads(cfg.threads)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    log_path = run / "train_log.json"
    times = json.loads(log_path.read_text()).get("times", {}) if log_path.exists() else {}
    histories = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.time()
        result = fn(*args, **kwargs)
        times[name] = times.get(name, 0.0) + time.time() - t0
        return result

    model = init_weights(build_model(cfg.model_config()), cfg.seed)
    bank = timed("bank", build_bank, cfg, model, run)
    histories["stage1"], stage1_metrics = timed("stage1", run_stage1, cfg, model, bank, run)
    freeze_encoders(model)
    kinds = [synthetic.scene_kind(bank_seed(cfg, i)) for i in range(len(bank))]
    feats = timed("features", grid_features, model, bank, groups=kinds)
    del bank
    if cfg.extra_clips:
        feats = feats.extended(timed("extra_clips", build_extra, cfg, model, run))
    histories["stage2"], lag_probe, draw = timed("stage2", run_stage2, cfg, model, feats, run)
    sab = freeze_encoders(syncability_model(model, cfg.seed))
    histories["stage3"] = timed("stage3", run_stage3, cfg, sab, feats, run, offset_probe_from(model), lag_probe)
    plot_losses(histories, run / "loss_curve.png")
    metrics = {**stage1_metrics, **validate(model, sab, feats, np.arange(cfg.val_clips), cfg.seed)}
    final = {k: histories[k][-1] for k in histories if histories[k]}
    log = {"config": {k: v for k, v in asdict(cfg).items() if k != "times"}, "times": times,
           "total_sec": sum(times.values()), "metrics": metrics, "final_step": final, "stage2_head_draw": draw,
           "num_offset_classes": NUM_OFFSET_CLASSES}
    log_path.write_text(json.dumps(log, indent=1))
    if cfg.bundle:
        bundle = Path(cfg.bundle)
        bundle.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "synchronizability.safetensors", "loss_curve.png"):
            shutil.copyfile(run / name, bundle / name)
    return log
