"""Precision variants of an exported fp32 graph (inputs and outputs stay float32 in every variant).

- fp16: mixed precision with onnxconverter-common. LayerNormalization, Softmax and the logits
  layer (everything after the head's final LayerNorm) stay float32; the rest runs in float16.
  TensorRT builds strongly typed engines from this graph; ONNX Runtime runs it on GPU providers
  (on CPU it measures the drift).
- int8: ONNX Runtime dynamic quantisation (int8 weights per output channel, uint8 activations
  quantised per call) of the MatMul/Gemm layers with constant weights; attention products, the
  convolutions and the logits layer stay float32. The fast CPU variant, opt-in.
"""
from __future__ import annotations

from pathlib import Path

import onnx

FP32_OPS = ("LayerNormalization", "Softmax")
QUANTISED_OPS = ("MatMul", "Gemm")


def tail_nodes(model: onnx.ModelProto, output: str | None = None, stop: str = "LayerNormalization") -> list[str]:
    """Names of the nodes between the last `stop` node and `output` (default: the first graph output)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    todo, names = [output or model.graph.output[0].name], []
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.op_type == stop or node.name in names:
            continue
        names.append(node.name)
        todo.extend(node.input)
    return names


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give unnamed nodes unique names (block and exclude lists address nodes by name)."""
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    return model


def to_fp16(src: str | Path, dst: str | Path, fp32_tail: bool = False,
            fp32_ops: tuple[str, ...] = FP32_OPS) -> Path:
    """Write the mixed-precision fp16 variant of the fp32 graph `src` to `dst`."""
    from onnxconverter_common import float16

    model = _named(onnx.load(str(src)))
    nodes = tail_nodes(model) if fp32_tail else []
    fp16 = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(fp32_ops),
        node_block_list=nodes)
    onnx.save(_float32_outputs(fp16), str(dst))
    return Path(dst)


def _float32_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make every graph output float32 again.

    With keep_io_types, onnxconverter-common still ends a graph whose last node is blocked
    (kept float32) with a Cast to float16; that Cast is turned into a Cast to float32 (a no-op
    on the float32 logits, a conversion if the input was float16).
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        if out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            continue
        node = producer.get(out.name)
        if node is not None and node.op_type == "Cast":
            next(a for a in node.attribute if a.name == "to").i = onnx.TensorProto.FLOAT
        else:
            raise ValueError(f"fp16 conversion left output {out.name!r} in another type")
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return model


def to_int8(src: str | Path, dst: str | Path, fp32_tail: bool = False) -> Path:
    """Write the dynamically quantised int8 variant of the fp32 graph `src` to `dst`.

    The graph first goes through ONNX Runtime's quantisation pre-processing (shape inference and
    basic graph optimisation, standard ops only), as ONNX Runtime recommends.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    pre = dst.with_name(dst.name + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = _named(onnx.load(str(pre)))
    finally:
        pre.unlink(missing_ok=True)
    exclude = tail_nodes(model) if fp32_tail else []
    gemms = {n.name for n in model.graph.node if n.op_type == "Gemm"}
    exclude += [f"{name}_MatMul" for name in exclude if name in gemms]  # the quantiser's Gemm -> MatMul
    quantize_dynamic(model, str(dst), op_types_to_quantize=list(QUANTISED_OPS), per_channel=True,
                     weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                     extra_options={"MatMulConstBOnly": True})
    return dst
