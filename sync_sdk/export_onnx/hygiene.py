"""Graph hygiene: properties of an exported graph that TensorRT and ONNX Runtime need (no torch).

- opset >= 17, so LayerNorm is one `LayerNormalization` node;
- no `Einsum` (attention products as batched MatMul), no `ScatterND` (in-place writes), no
  op outside the default ONNX domain (fused fast-path kernels such as PyTorch's
  `_transformer_encoder_layer_fwd` would appear as ATen / custom-domain nodes);
- every Softmax is attention written to fuse: `MatMul(Q * scale, K^T) -> Softmax -> MatMul(., V)`,
  with the scale applied to Q (or K, or sqrt of it to both) before the first MatMul.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

FORBIDDEN_OPS = ("Einsum", "ScatterND", "ATen")
PASS_THROUGH = ("Cast", "Transpose", "Reshape")  # may sit between a scaling Mul and the MatMul


def op_counts(model: onnx.ModelProto) -> Counter:
    """Node count per op type (main graph)."""
    return Counter(n.op_type for n in model.graph.node)


def _scalars(model: onnx.ModelProto) -> set[str]:
    """Names of 1-element constant tensors (initializers and Constant outputs)."""
    names = {i.name for i in model.graph.initializer if int(np.prod(i.dims)) == 1}
    for n in model.graph.node:
        if n.op_type == "Constant":
            value = next((a for a in n.attribute if a.name in ("value", "value_float")), None)
            if value is not None and (value.name == "value_float"
                                      or numpy_helper.to_array(value.t).size == 1):
                names.add(n.output[0])
    return names


def attention_report(model: onnx.ModelProto) -> list[dict]:
    """For each Softmax: whether it reads a MatMul, feeds a MatMul, and the QK^T MatMul is pre-scaled."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    scalars = _scalars(model)

    def source(name: str):
        node = producer.get(name)
        while node is not None and node.op_type in ("Cast",):
            node = producer.get(node.input[0])
        return node

    def scaled(name: str) -> bool:
        node = producer.get(name)
        while node is not None and node.op_type in PASS_THROUGH:
            node = producer.get(node.input[0])
        return node is not None and node.op_type in ("Mul", "Div") and node.input[1] in scalars

    report = []
    for n in model.graph.node:
        if n.op_type != "Softmax":
            continue
        mm = source(n.input[0])
        outs, seen = list(consumers.get(n.output[0], [])), []
        while outs:
            c = outs.pop()
            if c.op_type == "Cast":
                outs.extend(consumers.get(c.output[0], []))
            else:
                seen.append(c.op_type)
        report.append({
            "softmax": n.name,
            "from_matmul": mm is not None and mm.op_type == "MatMul",
            "prescaled": mm is not None and mm.op_type == "MatMul" and any(scaled(i) for i in mm.input),
            "to_matmul": seen == ["MatMul"],
        })
    return report


def hygiene_problems(model: onnx.ModelProto) -> list[str]:
    """Human-readable problems; empty when the graph is clean."""
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        problems.append(f"opset {opset} < 17: LayerNorm is not one LayerNormalization node")
    counts = op_counts(model)
    problems += [f"{counts[o]} {o} node(s)" for o in FORBIDDEN_OPS if counts[o]]
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        problems.append(f"ops outside the ONNX domain: {foreign}")
    if model.functions:
        problems.append(f"{len(model.functions)} local function(s): not inlined")
    for a in attention_report(model):
        bad = [k for k in ("from_matmul", "prescaled", "to_matmul") if not a[k]]
        if bad:
            problems.append(f"attention at {a['softmax']} not in fusable form ({', '.join(bad)} false)")
    return problems
