"""Command-line arguments shared by the `sync-sdk` commands: model options, checked numbers, output
paths checked before any work starts, and negative values for list options."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

from sync_sdk.errors import InputError
from sync_sdk.extras import has_module
from sync_sdk.runtime.views import parse_views

LIST_OPTIONS = ("--shift-views",)  # options whose value may start with "-" ("-0.2,0,0.2")
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def add_model_args(p: argparse.ArgumentParser, default: str | None = None, views: bool = False) -> None:
    """--model, --backend, --device, --precision, --threads, --allow-unsafe, --max-checkpoint-bytes; with
    views, --shift-views."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default,
                   help="bundled name, official id, checkpoint file or export dir "
                        f"(default: {default or 'the official AudioSet checkpoint'})")
    g.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "torch"])
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"])
    g.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime")
    g.add_argument("--allow-unsafe", action="store_true",
                   help="load a checkpoint the restricted reader refuses with full unpickling (runs code in "
                        "the file: only for files you trust)")
    g.add_argument("--max-checkpoint-bytes", type=int, default=None, metavar="N",
                   help="largest tensor data a checkpoint may declare (default 4 GiB or "
                        "$SYNC_SDK_MAX_CHECKPOINT_BYTES); a file over it is refused before it is read")
    if views:
        g.add_argument("--shift-views", default=None, type=shift_views, metavar="S,S,..",
                       help="audio shifts (s) whose views each answer combines, e.g. -0.2,0,0.2; 0 = one "
                            "window (default: the model folder's inference.json; synthetic-tiny: -0.2,0,0.2)")


def shift_views(text: str) -> tuple[float, ...]:
    """argparse type of --shift-views: comma-separated seconds (runtime/views.py parse_views)."""
    try:
        return parse_views(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def finite_float(text: str) -> float:
    """argparse type of a number of seconds: finite (nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    return value


def join_list_values(argv: Sequence[str]) -> list[str]:
    """argv with "--shift-views -0.2,0,0.2" joined into "--shift-views=-0.2,0,0.2" (argparse takes a
    value starting with "-" for an option, unless it is one negative number)."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        if items[i] in LIST_OPTIONS and i + 1 < len(items) and items[i + 1].startswith("-") \
                and "," in items[i + 1]:
            out.append(f"{items[i]}={items[i + 1]}")
            i += 2
            continue
        out.append(items[i])
        i += 1
    return out


def check_output(path: Path | None, option: str, suffixes: Sequence[str] = ()) -> Path | None:
    """`path` if a file can be written there: not a folder, in a folder that exists, with one of
    `suffixes` when given; else InputError naming `option`. Checked before the work starts."""
    if path is None:
        return None
    if path.is_dir() or str(path).endswith(("/", "\\")):
        raise InputError(f"{option} {path}: is a folder; expected a file path"
                         + (f" ending in {', '.join(suffixes)}" if suffixes else ""))
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: expected a file ending in {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise InputError(f"{option} {path}: the folder {path.parent} does not exist; create it first")
    return path


def check_plot(path: Path | None, option: str) -> Path | None:
    """check_output for a figure, and matplotlib present (InputError naming the extra otherwise)."""
    if path is not None and not has_module("matplotlib"):
        raise InputError(f"{option} needs matplotlib, which is not installed: pip install 'sync-sdk[plot]' "
                         f"(or leave out {option})")
    return check_output(path, option, PLOT_SUFFIXES)
