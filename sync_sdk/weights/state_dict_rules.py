"""Official load-time rules for Synchformer state dicts (torch-free; arrays need `.shape` and slicing).

- `trim_pos_emb`: the head's positional table may be longer than the model's: keep the first rows
  (official `Synchformer.load_state_dict`); shorter is an error.
- `check_keys`: strict comparison against the expected names and shapes, naming every bad key.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync_sdk.errors import CheckpointError

POS_EMB_KEY = "transformer.pos_emb_cfg.pos_emb"


def trim_pos_emb(state_dict: Mapping[str, Any], rows: int) -> dict[str, Any]:
    """Copy of `state_dict` with `POS_EMB_KEY` (1, R, D) cut to (1, rows, D) when R > rows.

    Raises CheckpointError when R < rows. A missing or non-3-D table is left for `check_keys`.
    """
    out = dict(state_dict)
    table = out.get(POS_EMB_KEY)
    if len(getattr(table, "shape", ())) != 3:
        return out
    have = table.shape[1]
    if have < rows:
        raise CheckpointError(f"{POS_EMB_KEY} has {have} rows, the model needs {rows} "
                              f"(2 + 14 per segment); a shorter table cannot be extended")
    if have > rows:
        out[POS_EMB_KEY] = table[:, :rows]
    return out


def check_keys(state_dict: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise CheckpointError unless `state_dict` has exactly the `expected` names and shapes."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(expected[k])})"
                 for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    problems = [f"{label} ({len(keys)}): {', '.join(keys)}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped))
                if keys]
    if problems:
        raise CheckpointError("state dict does not fit the model: " + "; ".join(problems))
