"""Reliability figures of issue #27 in one JSON: media fuzzing, killed batch jobs, peak memory.

    python benchmarks/reliability.py [--fuzz-n 300] [--kills 10] [--ray-kills 2] \\
        [--json benchmarks/results/reliability.json]

- fuzz: `benchmarks/faults/media_fuzz.py`: damaged and crafted media through `sync-sdk predict`, each
  under a time bound; outcomes counted per error class ("ok" for an answer), crashes and hangs.
- kills: `benchmarks/faults/kills.py`: `sync-sdk batch` (and `batch --ray`) SIGKILLed at random
  moments, then resumed; inputs without a line (lost) or with several (duplicated).
- memory: `benchmarks/faults/memory.py`: peak RSS (`/usr/bin/time -v`) of `predict` and `scan` with the
  bundled model, and of a 20-minute scan over a 1-minute one.
Each section is a subprocess-driven measurement of the CLI as users run it; the machine is named in
the JSON. Prints one table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from benchmarks.faults.kills import run_kills  # noqa: E402
from benchmarks.faults.media_fuzz import REAL_DIR, make_fuzz_files, run_fuzz  # noqa: E402
from benchmarks.faults.memory import measure_memory  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "reliability.json"


def machine() -> dict:
    """What ran the figures: CPU model, cores, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fuzz-n", type=int, default=300, help="fuzzed media files (default 300)")
    p.add_argument("--fuzz-seed", type=int, default=0)
    p.add_argument("--fuzz-timeout", type=float, default=60.0, help="seconds each fuzzed file may take")
    p.add_argument("--kills", type=int, default=10, help="SIGKILLed local batch runs (default 10)")
    p.add_argument("--ray-kills", type=int, default=2, help="Ray batch runs killed (the first: a model actor; the rest: the driver; default 2)")
    p.add_argument("--skip", nargs="*", default=[], choices=["fuzz", "kills", "memory"])
    p.add_argument("--json", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    out: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="reliability_") as tmp:
        work = Path(tmp)
        if "fuzz" not in args.skip:
            cases = make_fuzz_files(work / "fuzz", args.fuzz_n, args.fuzz_seed, REAL_DIR)
            fuzz = run_fuzz(cases, args.fuzz_timeout)
            out["fuzz"] = {k: v for k, v in fuzz.items() if k != "results"}
        if "kills" not in args.skip:
            out["kills"] = run_kills(work / "kills", runs=args.kills, ray_runs=args.ray_kills)
        if "memory" not in args.skip:
            out["memory"] = measure_memory(work / "memory")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(table(out))
    print(f"written to {args.json}")
    return 0


def table(out: dict) -> str:
    """The headline figures, one per row."""
    rows = []
    if "fuzz" in out:
        f = out["fuzz"]
        rows += [("fuzz: files", f["files"]), ("fuzz: crashes", f["crashes"]), ("fuzz: hangs", f["hangs"]),
                 ("fuzz: outcomes", ", ".join(f"{k} {v}" for k, v in f["outcomes"].items())),
                 ("fuzz: slowest file (s)", f["slowest_sec"])]
    if "kills" in out:
        k = out["kills"]
        rows += [("kills: runs", k["runs"]), ("kills: lost", k["lost"]), ("kills: duplicated", k["duplicated"])]
        if "ray" in k:
            rows += [("kills (ray): runs / lost / duplicated",
                      f"{k['ray'].get('runs')} / {k['ray'].get('lost')} / {k['ray'].get('duplicated')}")]
    if "memory" in out:
        m = out["memory"]
        rows += [("memory: predict peak (MB)", m["predict_peak_mb"]), ("memory: scan peak (MB)", m["scan_peak_mb"]),
                 ("memory: 20-min scan / 1-min scan", m["scan_long_over_short"])]
    width = max(len(r[0]) for r in rows) if rows else 0
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


if __name__ == "__main__":
    sys.exit(main())
