"""Exporter (torch): Synchformer -> ONNX graphs per stage, precision variants, TensorRT engines, manifest.

    from sync_sdk.export_onnx import load_model, export_model
    model, model_id = load_model("tiny")
    export_model(model, "exports/tiny", model_id, precision="int8")
"""
from sync_sdk.extras import require_module

for _module in ("torch", "onnx", "onnxscript"):  # before the imports below, for a clear message
    require_module(_module, "export", "exporting a model to ONNX")

from sync_sdk.export_onnx.build import export_model, load_model, random_state_dict, resolve_backend
from sync_sdk.export_onnx.graphs import OPSET, export_stage, stage_io
from sync_sdk.export_onnx.hygiene import attention_report, hygiene_problems, op_counts
from sync_sdk.export_onnx.precision import to_fp16, to_int8

__all__ = ["export_model", "load_model", "random_state_dict", "resolve_backend", "OPSET", "export_stage",
           "stage_io", "attention_report", "hygiene_problems", "op_counts", "to_fp16", "to_int8"]
