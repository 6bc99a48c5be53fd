"""Train Synchformer on synthetic sparse-cue clips: stage 1 (encoders: event detection + contrastive),
stage 2 (offset head), stage 3 (synchronizability head). Resumable: re-run the same command to continue.

    pip install -e '.[train]'     # torch and matplotlib, beside the runtime's dependencies
    nohup nice python export/train.py --run-dir runs/synthetic-tiny --model tiny --seed 0 \
        --bundle sync_sdk/models/synthetic-tiny > train.log 2>&1 &

Runs from a checkout: the recipe is the `sync_training` package beside `sync_sdk`, which the runtime
wheel does not carry. Every TrainConfig field (sync_training/recipe.py) is an option; see --help.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

TRAIN_EXTRA = ("torch", "matplotlib")  # what the recipe needs beyond the runtime (setup.py's "train" extra)


def require_train_extra() -> None:
    """Exit with the install command when a package of the train extra is missing (before any stage runs:
    matplotlib only draws the loss curves at the end)."""
    missing = [name for name in TRAIN_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"export/train.py needs {' and '.join(missing)}, which the runtime does not install: "
                 "pip install -e '.[train]' in the checkout")


require_train_extra()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_training.recipe import TrainConfig, train  # noqa: E402


def parse(argv: list[str] | None = None) -> TrainConfig:
    """Command-line options -> TrainConfig: one --option per field (underscores as dashes)."""
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
    """Run (or resume) the recipe; prints the seconds per stage and the validation metrics as JSON."""
    log = train(parse(argv))
    print(json.dumps({"times": log["times"], "total_sec": log["total_sec"], "metrics": log["metrics"]}, indent=1))
    return log


if __name__ == "__main__":
    main()
