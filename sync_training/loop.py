"""A resumable training loop: AdamW with linear warm-up, an optional stretch at the peak rate and
cosine decay, gradient clipping, tqdm, periodic state files (`<run_dir>/<stage>.state.pt`: modules,
optimizer, step, loss history) and a loss-curve PNG. Re-running a stage resumes from its last saved
step; a finished stage returns at once.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm


@dataclass(frozen=True)
class Schedule:
    """Steps, peak learning rate, warm-up steps, weight decay, state-save period. After the warm-up
    the rate stays at the peak until step `decay_from`, then follows a cosine from `decay_lr` (default:
    the peak) down to `floor` times that at the last step (decay_from >= steps: constant)."""

    steps: int
    lr: float
    warmup: int = 20
    weight_decay: float = 0.05
    save_every: int = 50
    clip_grad: float = 1.0
    decay_from: int = 0
    floor: float = 0.05
    decay_lr: float | None = None

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        start = max(self.warmup, self.decay_from)
        if step < start:
            return self.lr
        t = (step - start) / max(1, self.steps - start)
        top = self.lr if self.decay_lr is None else self.decay_lr
        return top * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


StepFn = Callable[[int], tuple[torch.Tensor, dict]]


def train_stage(name: str, run_dir: Path, modules: dict[str, nn.Module], params: list[nn.Parameter],
                schedule: Schedule, step_fn: StepFn, on_save: Callable[[], None] | None = None,
                stop_when: Callable[[list[dict]], bool] | None = None) -> list[dict]:
    """Run `step_fn(step) -> (loss, metrics)` for schedule.steps optimizer steps on `params`.

    modules: everything whose state must survive a restart (the model, auxiliary heads).
    on_save: called after each state save (e.g. to write the model's safetensors checkpoint).
    stop_when: asked with the history after each step (and on resuming); True saves the state and
    returns early.
    Returns the history: one dict per step (step, lr, loss and the step's metrics).
    """
    run_dir = Path(run_dir)
    state_path = run_dir / f"{name}.state.pt"
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    start, history = 0, []
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        opt.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
    if start >= schedule.steps or (stop_when is not None and history and stop_when(history)):
        return history
    for m in modules.values():
        m.train()
    bar = tqdm(range(start, schedule.steps), initial=start, total=schedule.steps, desc=name,
               mininterval=5.0, dynamic_ncols=True)
    for step in bar:
        lr = schedule.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, metrics = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, schedule.clip_grad)
        opt.step()
        history.append({"step": step, "lr": lr, "loss": loss.item(), **metrics})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", **{k: f"{v:.3f}" for k, v in metrics.items()})
        stop = stop_when is not None and stop_when(history)
        if stop or (step + 1) % schedule.save_every == 0 or step + 1 == schedule.steps:
            _save_state(state_path, modules, opt, step + 1, history)
            if on_save is not None:
                on_save()
        if stop:
            break
    return history


def _save_state(path: Path, modules: dict[str, nn.Module], opt: torch.optim.Optimizer, step: int,
                history: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                "optimizer": opt.state_dict(), "step": step, "history": history}, tmp)
    os.replace(tmp, path)


def plot_losses(histories: dict[str, list[dict]], path: Path, smooth: int = 10) -> Path:
    """One panel per stage: raw loss (light) and its running mean over `smooth` steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [(k, h) for k, h in histories.items() if h]
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(4.5 * max(1, len(stages)), 3.4), squeeze=False)
    for ax, (name, hist) in zip(axes[0], stages):
        steps = [h["step"] for h in hist]
        loss = torch.tensor([h["loss"] for h in hist])
        k = min(smooth, len(loss))
        mean = torch.nn.functional.avg_pool1d(loss[None, None], k, 1).flatten() if k > 1 else loss
        ax.plot(steps, loss.tolist(), alpha=0.3, lw=0.8)
        ax.plot(steps[k - 1:], mean.tolist(), lw=1.6)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
