"""Stage-2 take-off against the head's initial draw: K recipe stage-2 runs in lockstep on one device
(torch.func.vmap over stacked heads), run k drawing its head with torch seed k, all on one fp16 copy
of a recipe run's grid features; windows drawn by one CPU process per run.

    python benchmarks/stage2_takeoff.py features --run-dir RUN --out feats16.npz    # CPU, ~1 min
    python benchmarks/stage2_takeoff.py run --features feats16.npz --device cuda --json OUT.json

Stage 2 as the recipe's first 2,000-odd steps: `TokenWindows` over the bank's training clips (clips
0-7 held out), the class curriculum of a 12,000-step run, lr 2e-3 after 100 warm-up steps, AdamW
(weight decay 0.01, gradient norm clipped to 1 per run), cross-entropy + 5 x lag-map loss, batch 64.
Attention is written as softmax(q k^T / sqrt d) v (scaled_dot_product_attention has no vmap rule).
Prints per draw the mean batch accuracy of its last 250 steps (what the recipe's take-off check
reads: at step 2,000 it asks for 0.5, 1.5 x chance) and Acc@1 on 2,048 held-out windows.
Results: results/stage2_takeoff_h100.json and stage2_takeoff_boundary_h200.json (items 9 and 14 of
docs/synthetic-tiny-experiments.md).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sync_sdk.model.layers as layers  # noqa: E402
from sync_sdk.config import ModelConfig  # noqa: E402
from sync_sdk.model import build_model, load_weights  # noqa: E402
from sync_sdk.weights.checkpoint import load_checkpoint  # noqa: E402
from sync_training.encoder_init import init_weights  # noqa: E402
from sync_training.features import GridFeatureSet, grid_features  # noqa: E402
from sync_training.head import LagProbe, curriculum_classes, init_head_, offset_and_lag_loss  # noqa: E402
from sync_training.loop import Schedule  # noqa: E402
from sync_training.recipe import TrainConfig, build_bank  # noqa: E402
from sync_training.token_windows import TokenWindows  # noqa: E402

VAL_CLIPS, BATCH, LAG_WEIGHT, CURRICULUM_STEPS = 8, 64, 5.0, 12000


def _math_attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1) @ v


def write_features(run_dir: Path, out: Path) -> None:
    """Grid features of the bank of a recipe run with the default settings, through its stage-1
    encoders -> npz (v, a float16; token targets)."""
    cfg = TrainConfig(run_dir=str(run_dir))
    model = init_weights(build_model(cfg.model_config()), cfg.seed)
    bank = build_bank(cfg, model, run_dir)  # the stored clips, checked against the initial backbone
    f = grid_features(load_weights(model, load_checkpoint(run_dir / "stage1.safetensors").state_dict), bank)
    np.savez(out, v=f.vfeat.numpy().astype(np.float16), a=f.afeat.numpy().astype(np.float16),
             vtargets=f.vtargets, atargets=f.atargets)


def _load(path: Path) -> GridFeatureSet:
    z = np.load(path)
    return GridFeatureSet(torch.from_numpy(z["v"].astype(np.float32)), torch.from_numpy(z["a"].astype(np.float32)),
                          z["vtargets"], z["atargets"])


def _sampler(feats, data_seed, steps, queue, done):
    """One run's window stream: recipe TokenWindows batches, put on `queue` (fp16 tokens)."""
    torch.set_num_threads(1)
    windows = TokenWindows(feats, np.arange(VAL_CLIPS, len(feats)), 14)
    for i in range(steps):
        v, a, c, vw, lag = windows.sample(np.random.default_rng([data_seed, 2, i]), BATCH,
                                          curriculum_classes(i, CURRICULUM_STEPS))
        queue.put((v.half(), a.half(), c, vw, lag))
    done.wait()  # shared tensors stay alive until the main process has read them


class _Head(torch.nn.Module):
    """The trainable part of stage 2: projections + GlobalTransformer + off_head, and the lag probe."""

    def __init__(self, model, probe):
        super().__init__()
        self.vproj, self.aproj, self.transformer, self.probe = model.vproj, model.aproj, model.transformer, probe

    def forward(self, v, a, vw, lag, c):
        logits, lag_loss = offset_and_lag_loss(self, self.probe, v, a, vw, lag)
        return torch.nn.functional.cross_entropy(logits, c) + LAG_WEIGHT * lag_loss, logits


class _Logits(torch.nn.Module):
    """A `_Head`'s offset logits: v (B, S*8, Dv), a (B, S*6, Da) -> (B, 21)."""

    def __init__(self, head):
        super().__init__()
        self.vproj, self.aproj, self.transformer = head.vproj, head.aproj, head.transformer

    def forward(self, v, a):
        return self.transformer(self.vproj(v), self.aproj(a))


def run(features: Path, device: str, draws: int, steps: int, eval_every: int, deadline: float) -> dict:
    import torch.multiprocessing as mp
    from torch.func import functional_call, stack_module_state, vmap
    layers.attention = _math_attention
    feats = _load(features)
    ctx = mp.get_context("fork")
    queues, done = [ctx.Queue(maxsize=24) for _ in range(draws)], ctx.Event()
    for q in queues:
        ctx.Process(target=_sampler, args=(feats, 0, steps, q, done), daemon=True).start()
    cfg, train = ModelConfig.named("tiny"), np.arange(VAL_CLIPS, len(feats))
    heads = []
    for seed in range(draws):
        model = build_model(cfg)
        torch.manual_seed(seed)
        init_head_(model, feats.vfeat[train], feats.afeat[train])
        heads.append(_Head(model, LagProbe(cfg)))
    params, buffers = stack_module_state(heads)
    params = {k: p.to(device).detach().requires_grad_() for k, p in params.items()}
    buffers = {k: b.to(device) for k, b in buffers.items()}
    base = _Head(build_model(cfg), LagProbe(cfg)).to("meta")
    step_fn = vmap(lambda p, b, *x: functional_call(base, (p, b), x))
    logits_base = _Logits(base)
    logits_fn = vmap(lambda p, v, a: functional_call(logits_base, {k: x for k, x in p.items() if not k.startswith("probe.")},
                                                     (v, a)), in_dims=(0, None, None))
    m = {k: torch.zeros_like(p) for k, p in params.items()}
    s2 = {k: torch.zeros_like(p) for k, p in params.items()}
    schedule = Schedule(steps, 2e-3, warmup=100, weight_decay=0.01, decay_from=steps, floor=0.0)
    rng = np.random.default_rng([0, 9])
    val = [feats.sample_offsets(rng, 256, 14, np.arange(VAL_CLIPS)) for _ in range(8)]  # 2,048 windows
    val_v, val_a, val_c = (torch.cat([x[j] for x in val]).to(device) for j in range(3))
    accs, log, t0 = [[] for _ in range(draws)], [], time.time()
    for step in range(steps):
        batch = [q.get() for q in queues]
        v, a, c, vw, lag = (torch.stack([b[j] for b in batch]).to(device) for j in range(5))
        loss, logits = step_fn(params, buffers, v.float(), a.float(), vw, lag, c)
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        coef = (1.0 / (sum(g.pow(2).flatten(1).sum(1) for g in grads).sqrt() + 1e-6)).clamp(max=1.0)
        lr, t = schedule.lr_at(step), step + 1
        with torch.no_grad():
            for (name, p), g in zip(params.items(), grads):
                g = g * coef.view((draws,) + (1,) * (p.dim() - 1))
                p.mul_(1 - lr * 0.01)
                m[name].mul_(0.9).add_(g, alpha=0.1)
                s2[name].mul_(0.999).addcmul_(g, g, value=0.001)
                p.sub_(lr / (1 - 0.9 ** t) * m[name] / (s2[name].sqrt() / math.sqrt(1 - 0.999 ** t) + 1e-8))
        for k, acc in enumerate((logits.argmax(-1) == c).float().mean(1).tolist()):
            accs[k].append(acc)
        if t % eval_every == 0 or t == steps or time.time() - t0 > deadline:
            with torch.no_grad():
                pred = torch.cat([logits_fn(params, val_v[i:i + 512], val_a[i:i + 512]).argmax(-1)
                                  for i in range(0, len(val_c), 512)], 1)
            row = {"step": t, "seconds": round(time.time() - t0, 1),
                   "batch_acc_250": [round(float(np.mean(x[-250:])), 4) for x in accs],
                   "val_acc1": [round(float((p == val_c).float().mean()), 4) for p in pred]}
            log.append(row)
            print(f"step {t:5d} ({row['seconds']:.0f} s)  batch acc, last 250: "
                  + " ".join(f"{x:.2f}" for x in row["batch_acc_250"]), flush=True)
            if time.time() - t0 > deadline:
                break
    done.set()
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "draws": draws,
            "init_seeds": list(range(draws)), "log": log}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features")
    f.add_argument("--run-dir", type=Path, required=True)
    f.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--features", type=Path, required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--draws", type=int, default=8)
    r.add_argument("--steps", type=int, default=2000)
    r.add_argument("--eval-every", type=int, default=1000)
    r.add_argument("--deadline", type=float, default=480.0, help="stop after this many seconds")
    r.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.cmd == "features":
        write_features(args.run_dir, args.out)
        return
    result = run(args.features, args.device, args.draws, args.steps, args.eval_every, args.deadline)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
