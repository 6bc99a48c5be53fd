"""Offsets finer than the 0.2-s classes: predict(refine=True) against the class grid value.

    python benchmarks/fine_offset.py --select      # selection seeds: the refine parameters compared
    python benchmarks/fine_offset.py               # test seeds: plain vs refine, coverage, time ratio
    python benchmarks/fine_offset.py --scan --n 3  # scan(refine=True) against scan() on 30-s files

Synthetic clips from sync_sdk.synthetic, 5.2 s as benchmarks/accuracy.py makes them, with an offset
drawn uniformly in [-1.9, 1.9] s (not on the class grid; the generator places the audio to the sample,
so the true offset is round(16000 O) / 16000), each written as an H.264/AAC mp4 and predicted from
the file at start 0 by the bundled model (synthetic-tiny) with its shift views.

--select (seeds from SELECT_SEED): each clip's views at every 40-ms shift in -0.2..+0.32 s are scored
once (--views keeps them in an .npz); every candidate (fine span, step, search span, vertex or not) is
fitted from its subset of them and the table printed; the interval level is the smallest whose coverage on the clips whose class is right reaches
90 %. The winner (the lowest median + p90 error on those clips, then the fewest views) is what
runtime/refine.py holds. The test run (seeds from TEST_SEED, which no choice has seen) reports the
median and 90th-percentile absolute error of the refined offset and of the class grid value, on the
clips whose class is right and on all, the interval's coverage, and the time of predict(refine=True)
over predict() on the same clips, same run (time_ratio). --scan (seeds from SCAN_SEED) times whole
scans the same way. Each mode updates its part of the JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_sdk import SyncEngine, synthetic  # noqa: E402
from sync_sdk.geometry import SAMPLE_RATE, class_to_offset  # noqa: E402
from sync_sdk.results import softmax  # noqa: E402
from sync_sdk.runtime import refine  # noqa: E402
from sync_sdk.runtime.views import combine_views  # noqa: E402

SELECT_SEED = 3_000_000  # seeds below 1,000,000 are kept for outside evaluation
TEST_SEED = 4_000_000
SCAN_SEED = 4_100_000  # --scan: the cost of scan(refine=True)
CLIP_SEC = 5.2
MAX_ABS_OFFSET = 1.9
OUT = Path(__file__).resolve().parent / "results" / "fine_offset.json"
# candidates compared on the selection seeds: (fine span, step, search span) in seconds
CANDIDATES = [(span, step, search, vertex) for span in (0.08, 0.12, 0.2, 0.32) for step in (0.04, 0.08)
              for search in (0.1, 0.2) for vertex in (False, True) if round(span / step, 6) == round(span / step)]
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
COVERAGE = 0.9


def make_clip(seed: int, workdir: Path) -> tuple[Path, float, str]:
    """(mp4 path, true offset (s), kind) of the clip of `seed`: offset U(-1.9, 1.9) from the seed."""
    offset = float(np.random.default_rng(seed).uniform(-MAX_ABS_OFFSET, MAX_ABS_OFFSET))
    clip = synthetic.generate_clip(seed, offset, duration_sec=CLIP_SEC)
    path = synthetic.write_clip(clip, workdir / f"clip_{seed}.mp4")
    return path, round(offset * SAMPLE_RATE) / SAMPLE_RATE, clip.kind


def errors(est: np.ndarray, truth: np.ndarray) -> dict:
    """Median and 90th percentile of |est - truth| (s)."""
    e = np.abs(est - truth)
    return {"median_abs_err_s": round(float(np.median(e)), 4), "p90_abs_err_s": round(float(np.percentile(e, 90)), 4)}


# ---------------------------------------------------------------- selection
def collect(engine: SyncEngine, n: int, workdir: Path) -> list[tuple]:
    """Per selection clip: (true offset, the views' shifts, their probabilities (V, 21), class answer):
    the shift views and every 40-ms fine view in -0.2..+0.32 s that fits, each scored once."""
    fine = tuple(round(k * 0.04, 6) for k in range(-5, 9))
    rows = []
    for i in tqdm(range(n), desc="select", unit="clip", file=sys.stderr):
        path, truth, _ = make_clip(SELECT_SEED + i, workdir)
        views, extra = refine.clip_views(path, 0.0, 0.0, engine.shift_views, fine=fine)
        path.unlink()
        logits = engine.encoder.view_logits([views + extra])[0]
        answer = combine_views("sync", [v.shift_sec for v in views], logits[:len(views)])
        rows.append((truth, [v.shift_sec for v in views + extra], softmax(logits),
                     class_to_offset(int(np.argmax(softmax(answer))))))
    return rows


def candidate(rows: list[tuple], shift_views, span: float, step: float, search: float, vertex: bool) -> dict:
    """One candidate's errors on `rows` (`collect`), and the smallest of LEVELS whose interval covers
    COVERAGE of the clips whose class is right, with its coverage and median width."""
    truth, plain = np.array([r[0] for r in rows]), np.array([r[3] for r in rows])
    right = np.abs(plain - truth) <= 0.1 + 1e-9
    fits, used = [], []
    for _, shifts, probs, center in rows:
        keep = [k for k, d in enumerate(shifts) if d in shift_views or (abs(d) <= span + 1e-9 and
                                                                       abs(round(d / step) * step - d) < 1e-9)]
        used.append(len(keep))
        fits.append([refine.fit([shifts[k] for k in keep], probs[keep], center, search_sec=search, level=lv,
                                vertex=vertex) for lv in LEVELS])
    fits = np.array(fits)  # (clips, levels, 3)
    est, low, high = fits[:, 0, 0], fits[:, :, 1], fits[:, :, 2]
    cover = (low - 1e-9 <= truth[:, None]) & (truth[:, None] <= high + 1e-9)
    lv = next((i for i in range(len(LEVELS)) if cover[right, i].mean() >= COVERAGE), len(LEVELS) - 1)
    return {"fine_span_s": span, "step_s": step, "search_s": search, "vertex": vertex,
            "views": round(float(np.mean(used)), 1), "class_right": errors(est[right], truth[right]),
            "all": errors(est, truth), "level": LEVELS[lv],
            "coverage_class_right": round(float(cover[right, lv].mean()), 3),
            "coverage_all": round(float(cover[:, lv].mean()), 3),
            "median_width_s": round(float(np.median((high - low)[right, lv])), 3)}


def select(engine: SyncEngine, n: int, workdir: Path, views: Path | None = None) -> dict:
    """The candidates compared on n selection clips; views: an .npz keeping the clips' scored views
    (`collect`), read when it exists (to compare other candidates without scoring them again)."""
    if views is not None and views.is_file():
        z = np.load(views, allow_pickle=False)
        rows = [(t, list(s[~np.isnan(s)]), p[~np.isnan(s)], c)
                for t, s, p, c in zip(z["truth"], z["shifts"], z["probs"], z["center"])][:n]
    else:
        rows = collect(engine, n, workdir)
        if views is not None:
            width = max(len(r[1]) for r in rows)
            np.savez(views, truth=[r[0] for r in rows], center=[r[3] for r in rows],
                     shifts=[np.pad(np.asarray(r[1], float), (0, width - len(r[1])), constant_values=np.nan)
                             for r in rows],
                     probs=[np.pad(r[2], ((0, width - len(r[1])), (0, 0))) for r in rows])
    table = [candidate(rows, engine.shift_views, *c) for c in CANDIDATES]
    best = min(table, key=lambda r: (r["class_right"]["median_abs_err_s"] + r["class_right"]["p90_abs_err_s"],
                                     r["views"]))
    truth, plain = np.array([r[0] for r in rows]), np.array([r[3] for r in rows])
    right = np.abs(plain - truth) <= 0.1 + 1e-9
    print(f"\nselection: {n} clips (seeds {SELECT_SEED}..{SELECT_SEED + n - 1}), class right {right.mean():.2f}; "
          f"the class grid value on those: {errors(plain[right], truth[right])}")
    print(f"{'span':>5}{'step':>6}{'search':>7}{'vertex':>7}{'views':>6} |{'med ms':>7}{'p90 ms':>7} |"
          f"{'all med':>8}{'all p90':>8} |{'level':>6}{'cover':>6}{'width':>6}")
    for r in table:
        cr, al = r["class_right"], r["all"]
        print(f"{r['fine_span_s']:>5}{r['step_s']:>6}{r['search_s']:>7}{r['vertex']!s:>7}{r['views']:>6} |"
              f"{1e3 * cr['median_abs_err_s']:>7.0f}{1e3 * cr['p90_abs_err_s']:>7.0f} |"
              f"{1e3 * al['median_abs_err_s']:>8.0f}{1e3 * al['p90_abs_err_s']:>8.0f} |"
              f"{r['level']:>6}{r['coverage_class_right']:>6.2f}{r['median_width_s']:>6.3f}"
              + ("  <- best" if r is best else ""))
    return {"seeds": [SELECT_SEED, SELECT_SEED + n - 1], "n": n, "class_correct": round(float(right.mean()), 3),
            "plain_class_right": errors(plain[right], truth[right]), "candidates": table, "best": best}


# ---------------------------------------------------------------- test
def test(engine: SyncEngine, n: int, workdir: Path) -> dict:
    rows = []
    engine.predict(make_clip(TEST_SEED - 1, workdir)[0])  # warm up (not a test clip)
    for i in tqdm(range(n), desc="test", unit="clip", file=sys.stderr):
        path, truth, kind = make_clip(TEST_SEED + i, workdir)
        times = {}
        for refined in ((False, True) if i % 2 else (True, False)):  # alternate which runs first
            t0 = time.perf_counter()
            res = engine.predict(path, refine=refined)
            times[refined] = time.perf_counter() - t0
            if refined:
                fine = res
        path.unlink()
        rows.append({"seed": TEST_SEED + i, "kind": kind, "truth": truth, "class": fine.class_offset_sec,
                     "fine": fine.offset_sec, "low": fine.offset_interval_sec[0], "high": fine.offset_interval_sec[1],
                     "t_plain": times[False], "t_refine": times[True]})
    truth = np.array([r["truth"] for r in rows])
    plain, fine = np.array([r["class"] for r in rows]), np.array([r["fine"] for r in rows])
    low, high = np.array([r["low"] for r in rows]), np.array([r["high"] for r in rows])
    right = np.abs(plain - truth) <= 0.1 + 1e-9
    cover = (low - 1e-9 <= truth) & (truth <= high + 1e-9)
    t_plain, t_refine = sum(r["t_plain"] for r in rows), sum(r["t_refine"] for r in rows)
    return {
        "seeds": [TEST_SEED, TEST_SEED + n - 1], "n": n, "class_correct": round(float(right.mean()), 3),
        "refine": {**errors(fine[right], truth[right]), "all": errors(fine, truth),
                   "coverage_class_right": round(float(cover[right].mean()), 3),
                   "coverage_all": round(float(cover.mean()), 3),
                   "median_width_s": round(float(np.median((high - low)[right])), 3),
                   "within_class": round(float(np.mean(np.abs(fine - truth) <= 0.1 + 1e-9)), 3)},
        "plain": {**errors(plain[right], truth[right]), "all": errors(plain, truth)},
        "time_ratio": round(t_refine / t_plain, 2),
        "predict_s": round(t_plain / n, 3), "predict_refine_s": round(t_refine / n, 3),
        "rows": rows,
    }


def scan_cost(engine: SyncEngine, n: int, workdir: Path, duration: float = 30.0) -> dict:
    """Seconds of scan() and scan(refine=True) (hop 0.32 s) over n synthetic mp4s of `duration` s, same
    run, order alternating; and how far each window's refined offset and class are from the true offset."""
    times: dict[bool, float] = {False: 0.0, True: 0.0}
    errs, plain = [], []
    for i in tqdm(range(n), desc="scan", unit="file", file=sys.stderr):
        seed = SCAN_SEED + i
        offset = float(np.random.default_rng(seed).uniform(-MAX_ABS_OFFSET, MAX_ABS_OFFSET))
        path = synthetic.write_clip(synthetic.generate_clip(seed, offset, duration_sec=duration),
                                    workdir / f"scan_{seed}.mp4")
        for refined in ((False, True) if i % 2 else (True, False)):
            engine.clear_cache()
            t0 = time.perf_counter()
            timeline = engine.scan(path, refine=refined)
            times[refined] += time.perf_counter() - t0
            if refined:
                truth = round(offset * SAMPLE_RATE) / SAMPLE_RATE
                errs += list(np.abs(timeline.offset_sec - truth))
                plain += [abs(w.class_offset_sec - truth) for w in timeline]
        path.unlink()
    return {"files": n, "duration_sec": duration, "windows": len(errs), "scan_s": round(times[False] / n, 2),
            "scan_refine_s": round(times[True] / n, 2), "time_ratio": round(times[True] / times[False], 2),
            "window_median_abs_err_s": round(float(np.median(errs)), 4),
            "window_median_abs_err_plain_s": round(float(np.median(plain)), 4)}


def print_test(res: dict) -> None:
    print(f"\ntest: {res['n']} clips (seeds {res['seeds'][0]}..{res['seeds'][1]}), class right "
          f"{res['class_correct']:.2f}")
    print(f"{'abs error (ms)':<28}{'median':>8}{'p90':>8}")
    for label, r in (("plain, class right", res["plain"]), ("refine, class right", res["refine"]),
                     ("plain, all", res["plain"]["all"]), ("refine, all", res["refine"]["all"])):
        print(f"{label:<28}{1e3 * r['median_abs_err_s']:>8.0f}{1e3 * r['p90_abs_err_s']:>8.0f}")
    f = res["refine"]
    print(f"interval coverage: {f['coverage_class_right']:.2f} (class right), {f['coverage_all']:.2f} (all); "
          f"median width {1e3 * f['median_width_s']:.0f} ms")
    print(f"time: predict {res['predict_s']:.3f} s, predict(refine=True) {res['predict_refine_s']:.3f} s: "
          f"time_ratio {res['time_ratio']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--select", action="store_true", help="compare the candidate parameters on the selection seeds")
    ap.add_argument("--scan", action="store_true", help="time scan(refine=True) against scan() on 30-s files")
    ap.add_argument("--n", type=int, default=100, help="clips (default 100; --scan: files, default 3)")
    ap.add_argument("--json", type=Path, default=OUT)
    ap.add_argument("--views", type=Path, help="--select: keep the scored views in this .npz (read if it exists)")
    args = ap.parse_args()
    engine = SyncEngine.from_pretrained("synthetic-tiny")
    out = json.loads(args.json.read_text()) if args.json.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.select:
            out["selection"] = select(engine, args.n, Path(tmp), args.views)
        elif args.scan:
            out["scan"] = scan_cost(engine, args.n, Path(tmp))
            print(f"\nscan: {out['scan']}")
        else:
            res = test(engine, args.n, Path(tmp))
            print_test(res)
            out.update({k: v for k, v in res.items() if k != "seeds"}, test_seeds=res["seeds"])
    out.update(selection_seeds=out.get("selection", {}).get("seeds"), model=engine.model_id,
               backend=engine.backend.name, shift_views_sec=list(engine.shift_views), clip_sec=CLIP_SEC,
               start_sec=0.0, offsets=f"uniform in [-{MAX_ABS_OFFSET}, {MAX_ABS_OFFSET}] s",
               params={"fine_span_s": refine.FINE_SPAN_SEC, "step_s": refine.FINE_STEP_SEC,
                       "search_s": refine.SEARCH_SEC, "grid_s": refine.GRID_SEC, "level": refine.LEVEL,
                       "vertex": refine.VERTEX},
               machine=f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
