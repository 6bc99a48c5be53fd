"""Export the three stages of a Synchformer to ONNX, one self-contained file each.

| stage          | inputs                                           | output                    |
| audio_encoder  | aud (N, 1, 128, 66)                              | afeat (N, 6, a_dim)       |
| visual_encoder | vid (N, 16, 3, 224, 224)                         | vfeat (N, 8, v_dim)       |
| head           | vfeat (B, S*8, v_dim), afeat (B, S*6, a_dim)     | logits (B, num_classes)   |

N (segments) and B (clips) are the only dynamic axes. The dynamo exporter is tried first, with
`scaled_dot_product_attention` written as `softmax((q * scale) @ k^T) @ v` (the pattern TensorRT
fuses: scale on Q before the first MatMul; no Einsum, no ScatterND) and GELU in the form ONNX
Runtime fuses; the TorchScript exporter is the fallback. Every file passes the ONNX checker and strict shape inference.
"""
from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from onnxscript import opset18 as op
from torch import nn

from sync_sdk.config import ModelConfig
from sync_sdk.errors import BackendError
from sync_sdk.geometry import (
    AUDIO_TOKENS_PER_SEGMENT,
    CROP_SIZE,
    N_MELS,
    SEG_FRAMES,
    SPEC_FRAMES,
    VIDEO_TOKENS_PER_SEGMENT,
)

log = logging.getLogger(__name__)

OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
MAX_DIM = 4096  # upper bound given to torch.export for the dynamic axis (not a runtime limit)


def stage_io(config: ModelConfig) -> dict[str, dict]:
    """Stage -> {"inputs": [...], "outputs": [...]}, each {"name", "shape", "dtype"}; "N"/"B" dynamic."""
    c, s = config, config.n_segments

    def t(name, *shape):
        return {"name": name, "shape": list(shape), "dtype": "float32"}

    return {
        "audio_encoder": {"inputs": [t("aud", "N", 1, N_MELS, SPEC_FRAMES)],
                          "outputs": [t("afeat", "N", AUDIO_TOKENS_PER_SEGMENT, c.a_dim)]},
        "visual_encoder": {"inputs": [t("vid", "N", SEG_FRAMES, 3, CROP_SIZE, CROP_SIZE)],
                           "outputs": [t("vfeat", "N", VIDEO_TOKENS_PER_SEGMENT, c.v_dim)]},
        "head": {"inputs": [t("vfeat", "B", s * VIDEO_TOKENS_PER_SEGMENT, c.v_dim),
                            t("afeat", "B", s * AUDIO_TOKENS_PER_SEGMENT, c.a_dim)],
                 "outputs": [t("logits", "B", c.num_classes)]},
    }


class AudioStage(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, aud: torch.Tensor) -> torch.Tensor:
        return self.model.encode_audio(aud)


class VisualStage(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, vid: torch.Tensor) -> torch.Tensor:
        return self.model.encode_video(vid)


class HeadStage(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, vfeat: torch.Tensor, afeat: torch.Tensor) -> torch.Tensor:
        return self.model.head(vfeat, afeat)


STAGE_MODULES = {"audio_encoder": AudioStage, "visual_encoder": VisualStage, "head": HeadStage}


def example_inputs(stage: str, config: ModelConfig, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random float32 inputs of a stage with n segments (encoders) or n clips (head)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [[n] + i["shape"][1:] for i in stage_io(config)[stage]["inputs"]]
    return tuple(torch.randn(*s, generator=g) for s in shapes)


def _attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
               enable_gqa=False):
    """ONNX for aten SDPA on (B, H, L, d) tensors, no mask: Softmax((Q*scale) @ K^T) @ V."""
    if attn_mask is not None or is_causal or dropout_p or enable_gqa:
        raise NotImplementedError("only unmasked, non-causal inference attention is exported")
    s = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    q = op.Mul(query, op.Constant(value_float=s))
    scores = op.MatMul(q, op.Transpose(key, perm=[0, 1, 3, 2]))
    return op.MatMul(op.Softmax(scores, axis=-1), value)


@contextmanager
def quiet_exporters():
    """Silence the exporters' progress chatter (torch.onnx, onnxscript, ORT quantisation hints)."""
    names = ("torch.onnx", "onnxscript", "onnx_ir", "")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (UserWarning, FutureWarning, DeprecationWarning))
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _gelu(x, approximate: str = "none"):
    """ONNX for exact (erf) GELU as `(x * (1 + erf(x / sqrt 2))) * 0.5`: the order ONNX Runtime fuses
    into one Gelu node (the exporter's own `0.5 * (1 + erf(.)) * x` is left unfused)."""
    if approximate != "none":
        raise NotImplementedError("only the exact (erf) GELU is exported")
    erf = op.Erf(op.Div(x, op.Constant(value_float=math.sqrt(2.0))))
    return op.Mul(op.Mul(x, op.Add(erf, op.Constant(value_float=1.0))), op.Constant(value_float=0.5))


TRANSLATIONS = {torch.ops.aten.scaled_dot_product_attention.default: _attention,
                torch.ops.aten.gelu.default: _gelu}


def _export_dynamo(module: nn.Module, args, path: Path, io: dict, opset: int) -> None:
    names = [i["name"] for i in io["inputs"]]
    dim = torch.export.Dim(io["inputs"][0]["shape"][0], min=1, max=MAX_DIM)
    torch.onnx.export(
        module, args, str(path), dynamo=True, opset_version=opset, external_data=False,
        input_names=names, output_names=[o["name"] for o in io["outputs"]],
        dynamic_shapes={n: {0: dim} for n in names},
        custom_translation_table=TRANSLATIONS,
        optimize=True, verbose=False)


def _export_torchscript(module: nn.Module, args, path: Path, io: dict, opset: int) -> None:
    tensors = io["inputs"] + io["outputs"]
    torch.onnx.export(
        module, args, str(path), dynamo=False, opset_version=opset,
        input_names=[i["name"] for i in io["inputs"]], output_names=[o["name"] for o in io["outputs"]],
        dynamic_axes={t["name"]: {0: t["shape"][0]} for t in tensors}, do_constant_folding=True)


def export_stage(model: nn.Module, stage: str, path: str | Path, opset: int = OPSET,
                 exporter: str = "auto") -> str:
    """Write one stage's graph to `path`; returns the exporter that produced it.

    exporter: "dynamo", "torchscript", or "auto" (dynamo, then TorchScript if dynamo fails).
    """
    path = Path(path)
    io = stage_io(model.config)[stage]
    module = STAGE_MODULES[stage](model).eval()
    args = example_inputs(stage, model.config)
    order = EXPORTERS if exporter == "auto" else (exporter,)
    errors = []
    for name in order:
        try:
            with torch.inference_mode(False), torch.no_grad(), quiet_exporters():
                (_export_dynamo if name == "dynamo" else _export_torchscript)(module, args, path, io, opset)
        except Exception as e:  # exporter failures come in many types; try the next exporter
            errors.append(f"{name}: {type(e).__name__}: {_summary(e)}")
            log.warning("%s export of %s failed (%s)", name, stage, errors[-1])
            continue
        _set_io_shapes(path, io)
        check_graph(path, io)
        return name
    raise BackendError(f"could not export {stage} to ONNX:\n" + "\n".join(errors))


def _summary(e: Exception, limit: int = 600) -> str:
    """The informative part of an exporter error (torch puts it after '## Exception summary')."""
    text = str(e)
    text = text.split("## Exception summary", 1)[-1].strip()
    return text[:limit]


def _set_io_shapes(path: Path, io: dict) -> None:
    """Write the stage's I/O shapes into the graph (the TorchScript exporter leaves output dims symbolic)."""
    model = onnx.load(str(path))
    for values, specs in ((model.graph.input, io["inputs"]), (model.graph.output, io["outputs"])):
        for value, spec in zip(values, specs):
            for dim, want in zip(value.type.tensor_type.shape.dim, spec["shape"]):
                if isinstance(want, str):
                    dim.dim_param = want
                else:
                    dim.dim_value = want
    onnx.save(model, str(path))


def check_graph(path: str | Path, io: dict | None = None) -> None:
    """ONNX checker + strict shape inference (written back into the file); I/O names and shapes."""
    path = Path(path)
    onnx.checker.check_model(str(path), full_check=True)
    onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    if io is None:
        return
    graph = onnx.load(str(path), load_external_data=False).graph
    for kind, values in (("inputs", graph.input), ("outputs", graph.output)):
        got = [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]
        want = [(t["name"], t["shape"]) for t in io[kind]]
        if got != want:
            raise BackendError(f"{path}: graph {kind} {got}, expected {want}")
