"""Checkpoints: official `.pt` files (read without torch), bare state dicts, our safetensors files.

`load_checkpoint` reads a file, applies the official load rules (drop a `module.` prefix; cut a longer
`transformer.pos_emb_cfg.pos_emb` to the model's rows), tells the model (sync / synchronizability) from
the head keys, infers the `ModelConfig` from tensor shapes (or reads it from safetensors metadata) and
checks every key and shape against `expected_shapes(config)`. Arrays come out float32, keyed by the
official state-dict names in state-dict order. Torch is imported only for `allow_unsafe=True`.
"""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from sync_sdk.config import ModelConfig
from sync_sdk.errors import CheckpointError, CheckpointNotFoundError, SyncSDKWarning, UnsafeCheckpointError
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.version import __version__
from sync_sdk.weights.download import DEFAULT_CHECKPOINT, OFFICIAL_CHECKPOINTS, download_checkpoint
from sync_sdk.weights.limits import check_npz, check_safetensors, check_unsafe, resolve_max_bytes
from sync_sdk.weights.state_dict_rules import POS_EMB_KEY, check_keys, trim_pos_emb
from sync_sdk.weights.torch_zip import Placeholder, TensorRef, TorchZip, pickle_record

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint", "convert_checkpoint", "expected_shapes",
           "infer_config", "detect_variant", "validate_state_dict", "download_checkpoint",
           "OFFICIAL_CHECKPOINTS", "DEFAULT_CHECKPOINT"]

HEAD_KEYS = {"sync": "transformer.off_head.", "synchronizability": "transformer.sync_head."}
OFFICIAL_WIDTH = 768
# a torch.save file of torch < 1.6 starts with the pickled magic number 0x1950a86a20f9469cfc6c
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_SHOWN = 5
UNSAFE_HINT = ("if you trust the file, pass allow_unsafe=True (CLI: --allow-unsafe), which loads it with "
               "torch.load and runs code stored in it")


@dataclass(frozen=True)
class Checkpoint:
    """float32 `state_dict` (official names, state-dict order), its `config`, the file it came from
    (`source`) and how it was read (`file_format`: torch, torch-unsafe, safetensors, npz)."""

    state_dict: dict[str, np.ndarray]
    config: ModelConfig
    source: str
    file_format: str = "torch"


def _encoder_layer(prefix: str, d: int, mlp: int) -> dict[str, tuple[int, ...]]:
    """nn.TransformerEncoderLayer with a learned CLS token (freq / spatial aggregation)."""
    return {
        f"{prefix}.cls_token": (1, 1, d),
        f"{prefix}.self_attn.in_proj_weight": (3 * d, d), f"{prefix}.self_attn.in_proj_bias": (3 * d,),
        f"{prefix}.self_attn.out_proj.weight": (d, d), f"{prefix}.self_attn.out_proj.bias": (d,),
        f"{prefix}.linear1.weight": (mlp, d), f"{prefix}.linear1.bias": (mlp,),
        f"{prefix}.linear2.weight": (d, mlp), f"{prefix}.linear2.bias": (d,),
        f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
        f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
    }


def _linear(prefix: str, d_out: int, d_in: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (d_out, d_in), f"{prefix}.bias": (d_out,)}


def _norm(prefix: str, d: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (d,), f"{prefix}.bias": (d,)}


def expected_shapes(config: ModelConfig | str) -> dict[str, tuple[int, ...]]:
    """Every state-dict name -> shape of the model `config`, in the official state-dict order."""
    c = ModelConfig.named(config) if isinstance(config, str) else config
    v, a, h = c.v_dim, c.a_dim, c.h_dim
    s: dict[str, tuple[int, ...]] = {
        "vfeat_extractor.cls_token": (1, 1, v), "vfeat_extractor.pos_embed": (1, 197, v),
        "vfeat_extractor.temp_embed": (1, VIDEO_TOKENS_PER_SEGMENT, v),
        "vfeat_extractor.patch_embed.proj.weight": (v, 3, 16, 16), "vfeat_extractor.patch_embed.proj.bias": (v,),
        "vfeat_extractor.patch_embed_3d.proj.weight": (v, 3, 2, 16, 16),
        "vfeat_extractor.patch_embed_3d.proj.bias": (v,),
    }
    for i in range(c.v_depth):
        b = f"vfeat_extractor.blocks.{i}"
        s |= _norm(f"{b}.norm1", v) | _linear(f"{b}.attn.qkv", 3 * v, v) | _linear(f"{b}.attn.proj", v, v)
        s |= _linear(f"{b}.timeattn.qkv", 3 * v, v) | _linear(f"{b}.timeattn.proj", v, v)
        s |= _norm(f"{b}.norm2", v) | _linear(f"{b}.mlp.fc1", c.v_mlp, v) | _linear(f"{b}.mlp.fc2", v, c.v_mlp)
        s |= _norm(f"{b}.norm3", v)
    s |= _norm("vfeat_extractor.norm", v) | _encoder_layer("vfeat_extractor.spatial_attn_agg", v, c.v_mlp)
    e = "afeat_extractor.ast.embeddings"
    s |= {f"{e}.cls_token": (1, 1, a), f"{e}.distillation_token": (1, 1, a), f"{e}.position_embeddings": (1, 74, a),
          f"{e}.patch_embeddings.projection.weight": (a, 1, 16, 16), f"{e}.patch_embeddings.projection.bias": (a,)}
    for i in range(c.a_depth):
        b = f"afeat_extractor.ast.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            s |= _linear(f"{b}.attention.attention.{name}", a, a)
        s |= _linear(f"{b}.attention.output.dense", a, a)
        s |= _linear(f"{b}.intermediate.dense", c.a_mlp, a) | _linear(f"{b}.output.dense", a, c.a_mlp)
        s |= _norm(f"{b}.layernorm_before", a) | _norm(f"{b}.layernorm_after", a)
    s |= _norm("afeat_extractor.ast.layernorm", a) | _encoder_layer("afeat_extractor.freq_attn_agg", a, c.a_mlp)
    s |= _linear("vproj", h, v) | _linear("aproj", h, a)
    s |= {"transformer.OFF_tok": (1, 1, h), "transformer.MOD_tok": (1, 1, h)}
    s |= _norm("transformer.vis_in_lnorm", h) | _norm("transformer.aud_in_lnorm", h)
    s[POS_EMB_KEY] = (1, c.pos_emb_rows, h)
    for i in range(c.h_depth):
        b = f"transformer.blocks.{i}"
        s |= _norm(f"{b}.ln1", h) | _norm(f"{b}.ln2", h)
        for name in ("key", "query", "value", "proj"):
            s |= _linear(f"{b}.attn.{name}", h, h)
        s |= _linear(f"{b}.mlp.0", 4 * h, h) | _linear(f"{b}.mlp.2", h, 4 * h)
    s |= _norm("transformer.ln_f", h) | _linear(HEAD_KEYS[c.variant].rstrip("."), c.num_classes, h)
    return s


def detect_variant(keys, where: str = "state dict") -> str:
    """The model variant: sync (has transformer.off_head.*) or synchronizability (transformer.sync_head.*)."""
    keys = list(keys)
    if not any(k.startswith(("afeat_extractor.", "vfeat_extractor.", "transformer.")) for k in keys):
        raise CheckpointError(f"{where}: not a Synchformer checkpoint: no afeat_extractor.* / vfeat_extractor.* / "
                              f"transformer.* keys (found {_sample(keys)})")
    found = [v for v, prefix in HEAD_KEYS.items() if any(k.startswith(prefix) for k in keys)]
    if len(found) != 1:
        what = "both" if found else "neither"
        raise CheckpointError(f"{where}: has {what} of transformer.off_head.* (sync model) and transformer.sync_head.* "
                              "(synchronizability model); a stage-I feature-extractor checkpoint has no head")
    return found[0]


def infer_config(state_dict: dict[str, np.ndarray], where: str = "state dict") -> ModelConfig:
    """ModelConfig from tensor shapes. Head counts are not in the shapes: only official widths (768,
    heads 12/12/8) can be inferred; the official architecture gets the official segment count (longer
    pos-emb tables are trimmed), any other gets n_segments = (pos-emb rows - 2) / 14."""
    variant = detect_variant(state_dict, where)

    def shape(key: str, ndim: int) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"{where}: missing key {key} (needed to infer the model config)")
        if state_dict[key].ndim != ndim:
            raise CheckpointError(f"{where}: {key} has shape {tuple(state_dict[key].shape)}; expected {ndim} dims")
        return tuple(state_dict[key].shape)

    a_dim, v_dim, h_dim = (shape(k, 3)[-1] for k in (
        "afeat_extractor.ast.embeddings.cls_token", "vfeat_extractor.cls_token", "transformer.OFF_tok"))
    if (a_dim, v_dim, h_dim) != (OFFICIAL_WIDTH,) * 3:
        raise CheckpointError(
            f"{where}: cannot infer attention head counts from tensor shapes for non-official widths (audio {a_dim}, "
            f"visual {v_dim}, head {h_dim}; official is {OFFICIAL_WIDTH}); use a .safetensors file written by "
            "save_checkpoint (it stores the config) or pass config=ModelConfig(...)")
    official = ModelConfig.named(variant)
    cfg = replace(official, a_depth=_depth(state_dict, "afeat_extractor.ast.encoder.layer."),
                  a_mlp=shape("afeat_extractor.ast.encoder.layer.0.intermediate.dense.weight", 2)[0],
                  v_depth=_depth(state_dict, "vfeat_extractor.blocks."),
                  v_mlp=shape("vfeat_extractor.blocks.0.mlp.fc1.weight", 2)[0],
                  h_depth=_depth(state_dict, "transformer.blocks."))
    if cfg == official:
        return cfg
    rows = shape(POS_EMB_KEY, 3)[1]
    n_seg, rest = divmod(rows - 2, VIDEO_TOKENS_PER_SEGMENT + AUDIO_TOKENS_PER_SEGMENT)
    if rest or n_seg < 1:
        raise CheckpointError(f"{where}: {POS_EMB_KEY} has {rows} rows; expected 2 + 14 x n_segments")
    return replace(cfg, n_segments=n_seg)


def _depth(state_dict: dict, prefix: str) -> int:
    idx = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def validate_state_dict(state_dict: dict[str, np.ndarray], config: ModelConfig, where: str = "state dict") -> None:
    """Raise CheckpointError (naming `where`) listing missing, unexpected and mis-shaped keys for `config`."""
    try:
        check_keys(state_dict, expected_shapes(config))
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {_describe(config)}: {e}") from e


def _describe(c: ModelConfig) -> str:
    return (f"{c.variant} model (audio {c.a_dim}x{c.a_depth}, visual {c.v_dim}x{c.v_depth}, "
            f"head {c.h_dim}x{c.h_depth}, {c.n_segments} segments)")


def _sample(items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more if items else "nothing"


def _trim_pos_emb(state_dict: dict[str, np.ndarray], rows: int, where: str) -> dict[str, np.ndarray]:
    """Official rule (state_dict_rules.trim_pos_emb), with a warning when rows are dropped."""
    if getattr(state_dict.get(POS_EMB_KEY), "ndim", 0) != 3:
        return state_dict  # missing or mis-shaped: validate_state_dict reports it
    try:
        out = trim_pos_emb(state_dict, rows)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from e
    if out.get(POS_EMB_KEY) is not state_dict.get(POS_EMB_KEY):
        warnings.warn(f"{where}: {POS_EMB_KEY} has {state_dict[POS_EMB_KEY].shape[1]} rows; using the first "
                      f"{rows} as the official loader does", SyncSDKWarning, stacklevel=3)
        out[POS_EMB_KEY] = np.ascontiguousarray(out[POS_EMB_KEY])
    return out


def _as_float32(arrays: dict, where: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        arr = np.asarray(v)
        if arr.dtype.kind != "f":
            raise CheckpointError(f"{where}: {k} has dtype {arr.dtype}; expected floating point weights")
        out[k] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def _strip_module(arrays: dict) -> dict:
    if arrays and all(k.startswith("module.") for k in arrays):
        return {k[len("module."):]: v for k, v in arrays.items()}
    return arrays


def _to_config(config: ModelConfig | str | None) -> ModelConfig | None:
    return ModelConfig.named(config) if isinstance(config, str) else config


def load_checkpoint(path: str | os.PathLike, allow_unsafe: bool = False,
                    config: ModelConfig | str | None = None, max_checkpoint_bytes: int | None = None) -> Checkpoint:
    """Load an official .pt, a bare state dict (.pt/.pth/.npz) or our .safetensors file.

    `config` names the model to load into (default: the config stored in a safetensors file, else one
    inferred from shapes). `allow_unsafe=True` lets files the restricted loader refuses go through
    torch.load(weights_only=False), which runs code stored in the file. `max_checkpoint_bytes`: cap on
    the tensor data a file may declare (default $SYNC_SDK_MAX_CHECKPOINT_BYTES, else 4 GiB; limits.py).
    """
    path = Path(path)
    arrays, stored, file_format = _read_file(path, allow_unsafe, resolve_max_bytes(max_checkpoint_bytes))
    where = str(path)
    variant = detect_variant(_strip_module(arrays), where)
    state_dict = _as_float32(_strip_module(arrays), where)
    cfg = _to_config(config) or stored or infer_config(state_dict, where)
    if cfg.variant != variant:
        raise CheckpointError(f"{where}: holds a {variant} model ({HEAD_KEYS[variant]}* keys) but the config "
                              f"is for the {cfg.variant} model")
    state_dict = _trim_pos_emb(state_dict, cfg.pos_emb_rows, where)
    validate_state_dict(state_dict, cfg, where)
    return Checkpoint({k: state_dict[k] for k in expected_shapes(cfg)}, cfg, where, file_format)


def _read_file(path: Path, allow_unsafe: bool, cap: int) -> tuple[dict, ModelConfig | None, str]:
    """Raw arrays, the stored config (safetensors only) and the format name; `cap`: bytes of tensor data."""
    if not path.exists():
        raise CheckpointNotFoundError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    with open(path, "rb") as f:
        head = f.read(16)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                pkl = pickle_record(names)
                if pkl is not None:
                    return _read_torch_zip(TorchZip(path, zf, pkl, cap)), None, "torch"
                if names and all(n.endswith(".npy") for n in names):
                    check_npz(path, zf, cap)
                    with np.load(path, allow_pickle=False) as npz:
                        return dict(npz), None, "npz"
                raise CheckpointError(f"{path}: a zip archive without data.pkl (holds {_sample(names)}): "
                                      "not a torch checkpoint")
        if _is_safetensors(head):
            return _read_safetensors(path, cap)
        if head.startswith(_LEGACY_TORCH_MAGIC):
            raise UnsafeCheckpointError(f"{path}: legacy (torch < 1.6) serialization, which the restricted "
                                        f"loader does not read; {UNSAFE_HINT}")
    except UnsafeCheckpointError:
        if not allow_unsafe:
            raise
        check_unsafe(path, cap)
        return _read_unsafe(path), None, "torch-unsafe"
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from e
    raise CheckpointError(f"{path}: not a checkpoint: neither a torch zip archive (.pt/.pth), a safetensors file "
                          f"nor an .npz (the file starts with {head[:8]!r})")


def _read_torch_zip(tz: TorchZip) -> dict[str, np.ndarray]:
    obj = tz.load()
    sd = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
    where = f"{tz.path}" + (" ['model']" if sd is not obj else "")
    if isinstance(sd, Placeholder):
        raise UnsafeCheckpointError(f"{where}: holds a pickled {sd.qualname} object instead of a state dict; the "
                                    f"restricted loader does not build arbitrary objects; {UNSAFE_HINT}")
    if not isinstance(sd, dict):
        raise CheckpointError(f"{where}: holds a {type(sd).__name__}, not a state dict")
    for k, v in sd.items():
        if isinstance(v, Placeholder):
            raise UnsafeCheckpointError(f"{where}: entry {k!r} is a pickled {v.qualname} object, not a plain tensor; "
                                        f"{UNSAFE_HINT}")
        if not isinstance(k, str) or not isinstance(v, TensorRef):
            raise CheckpointError(f"{where}: not a state dict: entry {k!r} is a {type(v).__name__}, not a tensor")
    return tz.read_tensors(sd)


def _is_safetensors(head: bytes) -> bool:
    """safetensors = 8-byte little-endian header length, then a JSON header (its length is checked later)."""
    return head[8:9] == b"{"


def _read_safetensors(path: Path, cap: int) -> tuple[dict, ModelConfig | None, str]:
    check_safetensors(path, cap)
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # the Rust parser raises its own SafetensorError
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from e
    if "config" not in meta:
        return arrays, None, "safetensors"
    try:
        return arrays, ModelConfig.from_dict(json.loads(meta["config"])), "safetensors"
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid model config in the safetensors metadata ({e})") from e


def _read_unsafe(path: Path) -> dict[str, np.ndarray]:
    warnings.warn(f"{path}: loading with torch.load(weights_only=False), which runs code stored in the file; "
                  "do this only for files you trust", SyncSDKWarning, stacklevel=4)
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"{path}: allow_unsafe=True needs torch installed") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # anything the file's own code raises
        raise CheckpointError(f"{path}: torch.load failed ({type(e).__name__}: {e})") from e
    sd = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
    if isinstance(sd, torch.nn.Module):
        sd = sd.state_dict()
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise CheckpointError(f"{path}: holds a {type(sd).__name__} that is not a state dict of tensors")
    return {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()).numpy()
            for k, v in sd.items()}


def save_checkpoint(path: str | os.PathLike, state_dict: dict, config: ModelConfig | str) -> Path:
    """Write a float32 safetensors file with the config JSON in its metadata (atomic: temp file + rename)."""
    path, cfg = Path(path), _to_config(config)
    state_dict = _as_float32(state_dict, f"state dict for {path}")
    validate_state_dict(state_dict, cfg, f"state dict for {path}")

    tensors = {k: np.ascontiguousarray(state_dict[k]) for k in expected_shapes(cfg)}
    meta = {"format": "sync_sdk", "sync_sdk_version": __version__, "config": json.dumps(cfg.to_dict())}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, allow_unsafe: bool = False,
                       config: ModelConfig | str | None = None, max_checkpoint_bytes: int | None = None) -> Checkpoint:
    """Load any supported checkpoint (see load_checkpoint) and save it as our safetensors file `dst`."""
    ck = load_checkpoint(src, allow_unsafe=allow_unsafe, config=config, max_checkpoint_bytes=max_checkpoint_bytes)
    save_checkpoint(dst, ck.state_dict, ck.config)
    return ck
