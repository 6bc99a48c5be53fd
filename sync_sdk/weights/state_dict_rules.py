"""Official load-time rules for Synchformer state dicts (torch-free; arrays need `.shape` and slicing).

- `trim_pos_emb`: the head's positional table may be longer than the model's: keep the first rows
  (official `Synchformer.load_state_dict`); shorter is an error.
- `check_keys`: strict comparison against the expected names and shapes, naming every bad key.
- `to_module_names` / `to_official_names`: official names <-> the module names of `sync_sdk.model`,
  both read from one table (`_PARTS`). Official names are the interchange format (checkpoint files,
  `expected_shapes`, ONNX export, training checkpoints); module names exist only inside the model.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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


# One table per renamed part of the model; every other name is the same on both sides. A part:
# (official prefix, module prefix, members), "{i}" in a prefix standing for a block index. Members:
# (official, ours) in official state-dict order; a member is the tensor of that name or the `.weight`
# / `.bias` of the module of that name. "qkv[k]": the official tensor is row block k of `qkv`
# (q, k, v stacked along dim 0).
_AGGREGATION = (("cls_token", "cls_token"), ("self_attn.in_proj_weight", "attn.qkv.weight"),
                ("self_attn.in_proj_bias", "attn.qkv.bias"), ("self_attn.out_proj", "attn.proj"),
                ("linear1", "mlp.fc1"), ("linear2", "mlp.fc2"), ("norm1", "norm1"), ("norm2", "norm2"))
_PARTS = (
    ("afeat_extractor.ast.embeddings", "afeat_extractor",
     (("cls_token", "cls_token"), ("distillation_token", "dist_token"), ("position_embeddings", "pos_embed"),
      ("patch_embeddings.projection", "patch_embed"))),
    ("afeat_extractor.ast.encoder.layer.{i}", "afeat_extractor.blocks.{i}",
     (("attention.attention.query", "attn.qkv[0]"), ("attention.attention.key", "attn.qkv[1]"),
      ("attention.attention.value", "attn.qkv[2]"), ("attention.output.dense", "attn.proj"),
      ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"),
      ("layernorm_before", "norm1"), ("layernorm_after", "norm2"))),
    ("afeat_extractor.ast", "afeat_extractor", (("layernorm", "norm"),)),
    ("afeat_extractor.freq_attn_agg", "afeat_extractor.freq_attn_agg", _AGGREGATION),
    ("vfeat_extractor.spatial_attn_agg", "vfeat_extractor.spatial_attn_agg", _AGGREGATION),
    ("transformer.blocks.{i}", "transformer.blocks.{i}",
     (("ln1", "norm1"), ("ln2", "norm2"), ("attn.key", "attn.qkv[1]"), ("attn.query", "attn.qkv[0]"),
      ("attn.value", "attn.qkv[2]"), ("attn.proj", "attn.proj"), ("mlp.0", "mlp.fc1"), ("mlp.2", "mlp.fc2"))),
)
_TAILS = ("", ".weight", ".bias")


def _pattern(prefix: str, members: Iterable[str]) -> re.Pattern:
    """`prefix.member`, `prefix.member.weight` or `.bias`; "{i}" in the prefix matches a block index."""
    head = re.escape(prefix).replace(r"\{i\}", r"(?P<i>\d+)")
    return re.compile(rf"{head}\.(?P<m>{'|'.join(map(re.escape, members))})(?P<tail>\.weight|\.bias)?")


class _Part:
    """A `_PARTS` entry that matches names of either side (0 official, 1 module)."""

    def __init__(self, official: str, ours: str, members: tuple[tuple[str, str], ...]) -> None:
        self.prefixes = (official, ours)
        split = [re.fullmatch(r"(.+?)(?:\[(\d)\])?", o).groups() for _, o in members]
        blocks = Counter(name for name, _ in split)
        # official member -> (module member, row block, row blocks), in official order
        self.members = {off: (name, int(k or 0), blocks[name]) for (off, _), (name, k) in zip(members, split)}
        self.patterns = [_pattern(official, self.members), _pattern(ours, blocks)]

    def match(self, key: str, side: int) -> tuple[str, str, str, str] | None:
        """(official prefix, module prefix, member, tail) of `key`, named on `side`; None if not in this part."""
        m = self.patterns[side].fullmatch(key)
        if m is None:
            return None
        off, ours = (p.replace("{i}", m.groupdict().get("i") or "") for p in self.prefixes)
        return off, ours, m["m"], m["tail"] or ""


_COMPILED = tuple(_Part(*part) for part in _PARTS)


def _find(key: str, side: int) -> tuple[_Part, tuple[str, str, str, str]] | None:
    return next(((part, hit) for part in _COMPILED if (hit := part.match(key, side))), None)


def to_module_names(state_dict: Mapping[str, Any], concat: Callable[[list], Any]) -> dict[str, Any]:
    """Official names -> module names; q, k, v (in row-block order) joined by `concat` along dim 0.

    A stacked set with a member missing keeps its official names (a strict load then reports them).
    """
    out: dict[str, Any] = {}
    stacks: dict[str, tuple[int, dict[int, tuple[str, Any]]]] = {}
    for key, value in state_dict.items():
        found = _find(key, 0)
        if found is None:
            out[key] = value
            continue
        part, (_, ours_prefix, member, tail) = found
        name, k, n = part.members[member]
        ours = f"{ours_prefix}.{name}{tail}"
        out[ours] = value if n == 1 else None  # placeholder keeps the order
        if n > 1:
            stacks.setdefault(ours, (n, {}))[1][k] = (key, value)
    for ours, (n, blocks) in stacks.items():
        if len(blocks) == n:
            out[ours] = concat([blocks[k][1] for k in range(n)])
        else:
            del out[ours]
            out.update(blocks.values())
    return out


def to_official_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Module names -> official names (inverse of `to_module_names`); q, k, v are row slices of `qkv`
    (views, for torch tensors and NumPy arrays). Each part comes out whole, in official order, where
    its first module name was: for `Synchformer`'s module order that is the official state-dict order."""
    out: dict[str, Any] = {}
    done = set()
    for key, value in state_dict.items():
        found = _find(key, 1)
        if found is None:
            out[key] = value
            continue
        part, (off_prefix, ours_prefix, _, _) = found
        if (part, ours_prefix) in done:
            continue
        done.add((part, ours_prefix))
        for official, (name, k, n) in part.members.items():
            for tail in _TAILS:
                t = state_dict.get(f"{ours_prefix}.{name}{tail}")
                if t is not None:
                    rows = t.shape[0] // n
                    out[f"{off_prefix}.{official}{tail}"] = t[k * rows:(k + 1) * rows] if n > 1 else t
    return out
