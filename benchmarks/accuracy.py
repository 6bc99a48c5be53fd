"""Offset and synchronizability accuracy of a model, with the paper's metrics.

    python benchmarks/accuracy.py [--model NAME_OR_PATH] [--n CLIPS] [--seed SEED] [--json PATH]
    python benchmarks/accuracy.py --model 24-01-04T16-39-21 --csv my_videos.csv --json out.json

Synthetic mode (default): a held-out set of `--n` clips from sync_sdk.synthetic (seeds from --seed,
disjoint from the training seeds; the 21 offsets equally often, offset baked into the file: its
audio leads its video by the offset), each written as an H.264/AAC mp4 and read back through
`preprocess.prepare_inputs` (start 0, offset 0), plus `--n-neg` "no content overlap" clips (audio
from another scene) for synchronizability. Reports Acc@1, Acc@1 +-1 class and, when a
synchronizability model is available, its balanced accuracy (threshold 0.5 on softmax[:, 1]) and
ROC AUC (positives: every offset clip).

CSV mode: rows `path,offset_sec[,start_sec]` (header optional) of in-sync videos; the offset is
applied by the preprocessing, as in the paper's evaluation (`prepare_inputs(path, offset_sec,
start_sec)`); target = the grid class of offset_sec.

--model: a bundled model name (default synthetic-tiny), an official checkpoint id, a checkpoint
file or a folder; the synchronizability model is `synchronizability.safetensors` beside the sync
checkpoint when present, or --sync-model.

--shift-views: the audio shifts (s) whose views each answer combines, as `SyncEngine.predict` does
(sync_sdk/runtime/views.py); default: what the model folder's inference.json asks for (synthetic-tiny:
-0.2,0,0.2; the official models: 0). With several views the same run also scores the unshifted
window alone (the table's "one view" column, "single_view" in the JSON); `--shift-views 0` scores
only that.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_sdk import synthetic  # noqa: E402
from sync_sdk.geometry import NUM_OFFSET_CLASSES, class_to_offset, offset_to_class  # noqa: E402
from sync_sdk.inputs.views import View, view_inputs  # noqa: E402
from sync_sdk.model import build_model, load_weights  # noqa: E402
from sync_sdk.results import softmax  # noqa: E402
from sync_sdk.runtime.loading import BUNDLED_DEFAULT, resolve_model  # noqa: E402
from sync_sdk.runtime.views import combine_views, parse_views  # noqa: E402
from sync_sdk.weights.checkpoint import load_checkpoint  # noqa: E402
from sync_training.metrics import offset_accuracy, roc_auc, sync_accuracy  # noqa: E402

EVAL_SEED = 900_000_000  # training clips use seeds 10**7 * (seed + 1) + {1,2} * 10**6 + i, far below
CLIP_SEC = 5.2


def load_model(path: Path) -> torch.nn.Module:
    ckpt = load_checkpoint(path)
    return load_weights(build_model(ckpt.config), ckpt.state_dict).eval()


def resolve(model: str, sync_model: str | None) -> tuple[Path, Path | None]:
    """(sync checkpoint, synchronizability checkpoint or None)."""
    src = resolve_model(model)
    if src.checkpoint is None:
        raise SystemExit(f"{model}: no checkpoint file found (an export folder alone cannot be evaluated here)")
    if sync_model is not None:
        return src.checkpoint, resolve_model(sync_model).checkpoint
    beside = src.checkpoint.parent / "synchronizability.safetensors"
    return src.checkpoint, beside if beside.is_file() and beside != src.checkpoint else None


class Evaluator:
    """Encoders + heads on one clip's shift views (`shifts`, s); shares encoder features when both
    models share encoder weights, and video features between views with one video crop."""

    def __init__(self, sync_ckpt: Path, sab_ckpt: Path | None, shifts: tuple[float, ...] = (0.0,)) -> None:
        self.shifts = shifts
        self.model = load_model(sync_ckpt)
        self.sab = load_model(sab_ckpt) if sab_ckpt is not None else None
        if self.model.config.variant != "sync":
            self.model, self.sab = None, self.model
        self.shared = self.model is not None and self.sab is not None and all(
            torch.equal(a, b) for (ka, a), (kb, b) in zip(self.model.state_dict().items(), self.sab.state_dict().items())
            if ka.split(".")[0] in ("vfeat_extractor", "afeat_extractor"))

    @torch.no_grad()
    def __call__(self, views: list[View]) -> dict:
        """One window's views (`view_inputs`, the unshifted one first) -> {"pred": offset class or None,
        "sync_p": synchronizable probability or None}, each combined over the views (`combine_views`),
        and the same from the unshifted view alone ("pred_single", "sync_p_single")."""
        shifts = [v.shift_sec for v in views]
        out = dict.fromkeys(("pred", "sync_p", "pred_single", "sync_p_single"))
        feats = None
        if self.model is not None:
            feats = self._features(self.model, views)
            logits = self._logits(self.model, feats)
            out["pred"] = int(combine_views("sync", shifts, logits).argmax())
            out["pred_single"] = int(logits[0].argmax())
        if self.sab is not None:
            if not self.shared:
                feats = self._features(self.sab, views)
            logits = self._logits(self.sab, feats)
            out["sync_p"] = float(softmax(combine_views("synchronizability", shifts, logits))[1])
            out["sync_p_single"] = float(softmax(logits[0])[1])
        return out

    @staticmethod
    def _features(model: torch.nn.Module, views: list[View]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per view: visual (14, 8, Dv) and audio (14, 6, Da) features; one visual encoding per video crop."""
        video: dict[float, torch.Tensor] = {}
        out = []
        for view in views:
            if view.start_sec not in video:
                video[view.start_sec] = model.encode_video(torch.from_numpy(np.asarray(view.vid)))
            out.append((video[view.start_sec], model.encode_audio(torch.from_numpy(view.aud))))
        return out

    @staticmethod
    def _logits(model: torch.nn.Module, feats: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        """(V, classes) logits of `model` on the first S segments of each view's features."""
        s = model.config.n_segments
        return np.stack([model.head(v[:s].flatten(0, 1)[None], a[:s].flatten(0, 1)[None])[0].numpy()
                         for v, a in feats])


def synthetic_eval(ev: Evaluator, n: int, n_neg: int, seed: int, workdir: Path) -> dict:
    rows = []
    jobs = [(seed + i, i % NUM_OFFSET_CLASSES, False) for i in range(n)]
    jobs += [(seed + n + i, None, True) for i in range(n_neg)]
    t0 = time.time()
    for k, (clip_seed, cls, neg) in enumerate(jobs):
        offset = 0.0 if neg else class_to_offset(cls)
        clip = synthetic.generate_clip(clip_seed, offset, duration_sec=CLIP_SEC, no_overlap=neg)
        path = synthetic.write_clip(clip, workdir / f"clip_{clip_seed}.mp4")
        views = view_inputs(path, 0.0, 0.0, ev.shifts)
        path.unlink()
        rows.append({"seed": clip_seed, "kind": clip.kind, "no_overlap": neg, "target": cls, **ev(views)})
        if (k + 1) % 25 == 0 or k + 1 == len(jobs):
            print(f"  {k + 1}/{len(jobs)} clips, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return summarise(rows, time.time() - t0, len(ev.shifts))


def summarise(rows: list[dict], seconds: float, views: int = 1) -> dict:
    """Metrics of the combined views; with several views, also those of the unshifted view alone
    (under "single_view")."""
    out = _metrics(rows, seconds)
    if views > 1:
        out["single_view"] = _metrics([{**r, "pred": r["pred_single"], "sync_p": r["sync_p_single"]}
                                       for r in rows], seconds)
    return out


def _metrics(rows: list[dict], seconds: float) -> dict:
    pos = [r for r in rows if not r["no_overlap"]]
    out: dict = {"n": len(pos), "n_neg": len(rows) - len(pos), "seconds": round(seconds, 1)}
    if pos and pos[0]["pred"] is not None:
        pred, target = np.array([r["pred"] for r in pos]), np.array([r["target"] for r in pos])
        out.update(offset_accuracy(pred, target))
        out["per_kind"] = {k: offset_accuracy(pred[m], target[m]) | {"n": int(m.sum())}
                           for k in sorted({r["kind"] for r in pos})
                           for m in [np.array([r["kind"] == k for r in pos])]}
        out["acc1_per_offset"] = {f"{class_to_offset(c):+.1f}": float(np.mean(pred[target == c] == c))
                                  for c in range(NUM_OFFSET_CLASSES) if np.any(target == c)}
    if rows and rows[0]["sync_p"] is not None and out["n_neg"] > 0:
        score = np.array([r["sync_p"] for r in rows])
        label = np.array([not r["no_overlap"] for r in rows])
        out.update(sync_acc=sync_accuracy(score, label), sync_auc=roc_auc(score, label))
    return out


def csv_eval(ev: Evaluator, csv_path: Path) -> dict:
    rows, t0 = [], time.time()
    with open(csv_path, newline="") as f:
        for rec in csv.reader(f):
            if not rec or rec[0].startswith("#") or rec[0].strip().lower() == "path":
                continue
            path = Path(rec[0].strip())
            if not path.is_absolute():
                path = csv_path.parent / path
            offset = float(rec[1])
            start = float(rec[2]) if len(rec) > 2 and rec[2].strip() else 0.0
            rows.append({"path": str(path), "offset_sec": offset, "start_sec": start, "kind": "csv",
                         "no_overlap": False, "target": offset_to_class(offset),
                         **ev(view_inputs(path, start, offset, ev.shifts))})
    out = summarise(rows, time.time() - t0, len(ev.shifts))
    out["rows"] = rows
    return out


def print_table(model: str, res: dict) -> None:
    print(f"\nmodel: {model}   clips: {res['n']} offset-labelled, {res['n_neg']} no-overlap   "
          f"({res['seconds']:.0f} s)")
    single = res.get("single_view")
    print(f"{'metric':<24}{'views' if single else 'value':>8}" + (f"{'one view':>10}" if single else ""))
    for key, label in (("acc1", "Acc@1"), ("acc1_pm1", "Acc@1 +-1 class"),
                       ("sync_acc", "synchronizability acc"), ("sync_auc", "synchronizability AUC")):
        if key in res:
            cells = [res[key]] + ([single[key]] if single else [])
            print(f"{label:<24}" + "".join(f"{v:>8.3f}  " if key == "sync_auc" else f"{100 * v:>7.1f}%  "
                                           for v in cells))
    for kind, m in res.get("per_kind", {}).items():
        print(f"  {kind:<22}Acc@1 {100 * m['acc1']:.1f}%  +-1 {100 * m['acc1_pm1']:.1f}%  (n={m['n']})")
    if "acc1_per_offset" in res:
        print("  Acc@1 per offset: " + " ".join(f"{k}:{100 * v:.0f}" for k, v in res["acc1_per_offset"].items()))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=BUNDLED_DEFAULT, help="bundled name, official id, checkpoint or folder")
    ap.add_argument("--sync-model", default=None, help="synchronizability checkpoint (default: beside --model)")
    ap.add_argument("--n", type=int, default=525, help="offset-labelled synthetic clips (25 per offset)")
    ap.add_argument("--n-neg", type=int, default=None, help="no-overlap clips (default n // 3)")
    ap.add_argument("--seed", type=int, default=EVAL_SEED, help="first clip seed")
    ap.add_argument("--csv", type=Path, default=None, help="path,offset_sec[,start_sec] rows of in-sync videos")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--shift-views", default=None, type=parse_views,
                    help="audio shifts (s), comma-separated, e.g. -0.2,0,0.2 (default: the model's inference.json)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sync_ckpt, sab_ckpt = resolve(args.model, args.sync_model)
    shifts = resolve_model(args.model).shift_views() if args.shift_views is None else args.shift_views
    ev = Evaluator(sync_ckpt, sab_ckpt, shifts)
    print(f"sync: {sync_ckpt if ev.model is not None else '-'}   synchronizability: {sab_ckpt or '-'}   "
          f"shift views: {list(shifts)} s", file=sys.stderr)
    if args.csv is not None:
        res = csv_eval(ev, args.csv)
    else:
        n_neg = args.n // 3 if args.n_neg is None else args.n_neg
        with tempfile.TemporaryDirectory(prefix="sync_sdk_acc_") as tmp:
            res = synthetic_eval(ev, args.n, n_neg if ev.sab is not None else 0, args.seed, Path(tmp))
        res["seed"] = args.seed
    res["model"] = args.model
    res["shift_views_sec"] = list(shifts)
    print_table(args.model, res)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
