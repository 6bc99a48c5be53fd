"""Train Synchformer on synthetic sparse-cue clips: stage 1 (encoders: event detection + contrastive),
stage 2 (offset head), stage 3 (synchronizability head). Resumable: re-run the same command to continue.

    nohup nice python export/train.py --run-dir runs/synthetic-tiny --model tiny --seed 0 \
        --bundle sync_sdk/models/synthetic-tiny > train.log 2>&1 &

Every TrainConfig field (sync_sdk/training/recipe.py) is an option; see --help.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_training.recipe import TrainConfig, train  # noqa: E402


def parse(argv: list[str] | None = None) -> TrainConfig:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(TrainConfig):
        if f.name == "times":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.default is dataclasses.MISSING:
            ap.add_argument(flag, required=True)
        else:
            kind = type(f.default) if f.default is not None else str
            ap.add_argument(flag, type=kind, default=f.default, help=f"default {f.default}")
    return TrainConfig(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> dict:
    log = train(parse(argv))
    print(json.dumps({"times": log["times"], "total_sec": log["total_sec"], "metrics": log["metrics"]}, indent=1))
    return log


if __name__ == "__main__":
    main()
