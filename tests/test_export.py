"""Exporter: export/build_engine.py on the tiny config, graph hygiene, precision variants, manifest."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sync_sdk.config import ModelConfig  # noqa: E402
from sync_sdk.errors import BackendError  # noqa: E402
from sync_sdk.export_onnx import (  # noqa: E402
    attention_report,
    export_stage,
    graphs,  # noqa: E402
    hygiene_problems,
    load_model,
    op_counts,
)
from sync_sdk.export_onnx.precision import tail_nodes  # noqa: E402
from sync_sdk.weights.manifest import MANIFEST_NAME, STAGES, sha256_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "export"))
import build_engine  # noqa: E402

TINY = ModelConfig.named("tiny")
try:
    import tensorrt  # noqa: F401
    HAVE_TRT = True
except ImportError:
    HAVE_TRT = False


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """`build_engine.py --checkpoint tiny` with fp16 and int8 variants: (dir, printed text)."""
    out = tmp_path_factory.mktemp("tiny_cli")
    import contextlib
    import io
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        rc = build_engine.main(["--checkpoint", "tiny", "--out", str(out), "--backend", "onnxruntime",
                                "--precision", "fp32", "--variants", "fp16", "int8"])
    assert rc == 0, text.getvalue()
    return out, text.getvalue()


def graph(out: Path, name: str):
    return onnx.load(str(out / name))


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_cli_writes_every_stage_and_variant(cli_export):
    out, text = cli_export
    names = {f"{s}{v}.onnx" for s in STAGES for v in ("", ".fp16", ".int8")}
    assert {p.name for p in out.iterdir()} == names | {MANIFEST_NAME}
    for s in STAGES:
        assert f"{s}: wrote {s}.onnx, {s}.fp16.onnx, {s}.int8.onnx" in text


def test_manifest_describes_and_hashes_every_file(cli_export):
    out, _ = cli_export
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert m["model_id"] == "tiny-random-seed0" and m["precision"] == "fp32" and m["opset"] >= 17
    assert m["config"] == TINY.to_dict() and m["exporter"] == "dynamo"
    assert set(m["files"]) == {p.name for p in out.iterdir()} - {MANIFEST_NAME}
    for name, entry in m["files"].items():
        assert entry["sha256"] == sha256_file(out / name) and entry["bytes"] == (out / name).stat().st_size
    assert m["stages"]["visual_encoder"]["inputs"] == [
        {"name": "vid", "shape": ["N", 16, 3, 224, 224], "dtype": "float32"}]
    assert m["stages"]["head"]["inputs"][1]["shape"] == ["B", 14 * 6, TINY.a_dim]


def test_graph_io_names_and_dynamic_axes(cli_export):
    out, _ = cli_export
    want = {
        "audio_encoder": ([("aud", ["N", 1, 128, 66])], [("afeat", ["N", 6, TINY.a_dim])]),
        "visual_encoder": ([("vid", ["N", 16, 3, 224, 224])], [("vfeat", ["N", 8, TINY.v_dim])]),
        "head": ([("vfeat", ["B", 112, TINY.v_dim]), ("afeat", ["B", 84, TINY.a_dim])],
                 [("logits", ["B", 21])]),
    }
    for stage, (ins, outs) in want.items():
        for variant in ("", ".fp16", ".int8"):
            g = graph(out, f"{stage}{variant}.onnx").graph
            assert [(v.name, dims(v)) for v in g.input] == ins
            assert [(v.name, dims(v)) for v in g.output] == outs
            assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*g.input, *g.output])
    # the dynamic axis really is dynamic: 1 and 3 segments through the same session
    sess = ort.InferenceSession(str(out / "audio_encoder.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        assert sess.run(None, {"aud": np.zeros((n, 1, 128, 66), np.float32)})[0].shape == (n, 6, TINY.a_dim)


def test_graph_hygiene(cli_export):
    out, _ = cli_export
    # LayerNorms: AST 2/layer + final + aggregation 2; Motionformer 3/block + final + 2; head 2 + 2/block + ln_f
    layer_norms = {"audio_encoder": 2 * TINY.a_depth + 3, "visual_encoder": 3 * TINY.v_depth + 3,
                   "head": 2 + 2 * TINY.h_depth + 1}
    # attentions: AST 1/layer + aggregation; Motionformer 2 per divided attention (CLS + groups), 2/block
    softmaxes = {"audio_encoder": TINY.a_depth + 1, "visual_encoder": 4 * TINY.v_depth + 1,
                 "head": TINY.h_depth}
    for stage in STAGES:
        g = graph(out, f"{stage}.onnx")
        ops = op_counts(g)
        assert ops["Einsum"] == 0 and ops["ScatterND"] == 0
        assert ops["LayerNormalization"] == layer_norms[stage]
        assert ops["Softmax"] == softmaxes[stage]
        assert {n.domain for n in g.graph.node} <= {""}  # no fused fast-path / ATen / contrib kernels
        assert all(a["from_matmul"] and a["prescaled"] and a["to_matmul"] for a in attention_report(g))
        assert hygiene_problems(g) == []


def test_hygiene_flags_unfusable_graphs():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4, 4])
    nodes = [onnx.helper.make_node("Einsum", ["x", "x"], ["s"], equation="bij,bkj->bik"),
             onnx.helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             onnx.helper.make_node("MatMul", ["p", "x"], ["y"])]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 16)])
    problems = hygiene_problems(model)
    assert any("opset 16" in p for p in problems) and any("Einsum" in p for p in problems)
    assert any("not in fusable form (from_matmul, prescaled false)" in p for p in problems)


def _elem_types(model) -> dict:
    """Tensor name -> element type, from value_info, inputs, outputs and initializers."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def test_fp16_variant_keeps_norms_softmax_and_logits_fp32(cli_export):
    out, _ = cli_export
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    for stage in STAGES:
        g = graph(out, f"{stage}.fp16.onnx")
        types = _elem_types(g)
        kept = [n for n in g.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
        assert kept and all(types[n.input[0]] == F32 and types[n.output[0]] == F32 for n in kept)
        matmuls = [n for n in g.graph.node if n.op_type == "MatMul"]
        assert sum(types[n.output[0]] == F16 for n in matmuls) >= 0.9 * len(matmuls)
    head = graph(out, "head.fp16.onnx")
    types = _elem_types(head)
    (logits,) = [n for n in head.graph.node if n.op_type == "Gemm"]
    assert all(types[i] == F32 for i in logits.input) and types[logits.output[0]] == F32


def test_int8_variant_quantises_weights_only(cli_export):
    out, _ = cli_export
    for stage in STAGES:
        ops = op_counts(graph(out, f"{stage}.int8.onnx"))
        assert ops["MatMulInteger"] > 0 and ops["DynamicQuantizeLinear"] > 0
        # float MatMuls: the attention products (activation x activation, 2 per Softmax), logits layer
        assert ops["MatMul"] == 2 * ops["Softmax"] + (stage == "head")
        assert ops["Conv"] == (stage != "head") and ops["ConvInteger"] == 0  # patch embeddings stay float
    head = graph(out, "head.int8.onnx")
    tail = {n.op_type for n in head.graph.node if n.name in tail_nodes(head)}
    assert "MatMul" in tail and not tail & {"MatMulInteger", "DynamicQuantizeLinear"}  # float logits layer


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_backend_tensorrt_fails_clearly_without_tensorrt(tmp_path, capsys):
    rc = build_engine.main(["--checkpoint", "tiny", "--out", str(tmp_path), "--backend", "tensorrt"])
    err = capsys.readouterr().err
    assert rc == 3 and "needs TensorRT and an NVIDIA GPU" in err and "tensorrt package is not installed" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_backend_auto_says_it_builds_onnxruntime(cli_export):
    from sync_sdk.export_onnx import resolve_backend
    backend, why = resolve_backend("auto", "fp16")
    assert backend == "onnxruntime" and "TensorRT unavailable" in why
    with pytest.raises(BackendError, match="int8 is an ONNX Runtime CPU variant"):
        resolve_backend("tensorrt", "int8")


def test_torchscript_fallback_when_dynamo_fails(tmp_path, monkeypatch):
    model, _ = load_model("tiny", seed=1)

    def broken(*args, **kwargs):
        raise RuntimeError("dynamo is broken today")

    monkeypatch.setattr(graphs, "_export_dynamo", broken)
    path = tmp_path / "head.onnx"
    assert export_stage(model, "head", path) == "torchscript"
    g = onnx.load(str(path)).graph
    assert [(v.name, dims(v)) for v in g.output] == [("logits", ["B", 21])]
    vfeat, afeat = graphs.example_inputs("head", TINY, n=3, seed=5)
    with torch.inference_mode():
        want = model.head(vfeat, afeat).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"vfeat": vfeat.numpy(), "afeat": afeat.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    monkeypatch.setattr(graphs, "_export_torchscript", broken)
    with pytest.raises(BackendError, match="dynamo: RuntimeError: dynamo is broken today"):
        export_stage(model, "head", path)


def _probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_fp16_and_int8_drift_on_real_clips(cli_export, reference_root):
    """Variants vs fp32 on >= 64 clips cut from the two reference videos (real frames and sound).

    Segment features are computed once per variant on the 0.32-s grid (22 segments per video);
    clip k takes 14 consecutive video segments and 14 consecutive audio segments shifted by
    -2..2 segments, so the clips differ in content and in audio-visual offset.
    """
    from sync_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
    read_clip = pytest.importorskip("sync_sdk.media").read_clip
    preprocess = pytest.importorskip("sync_sdk.inputs.window")
    audio_segments, video_segments = preprocess.audio_segments, preprocess.video_segments

    out, _ = cli_export
    n_seg, starts = 22, 9
    vid, aud = [], []
    for path in sorted((reference_root / "videos").glob("*.mp4")):
        clip = read_clip(path, 0.0, duration_sec=7.5)
        vid.append(video_segments(clip, range(n_seg)))
        aud.append(audio_segments(clip, range(n_seg)))
    vid, aud = np.concatenate(vid), np.concatenate(aud)
    pairs = [(v * n_seg + i, v * n_seg + i + d) for v in range(len(vid) // n_seg) for i in range(starts)
             for d in range(-2, 3) if 0 <= i + d < starts]
    assert len(pairs) >= 64
    probs = {}
    for precision in ("fp32", "fp16", "int8"):
        be = OnnxRuntimeBackend.from_dir(out, precision=precision, threads=2)
        vf = np.concatenate([be.encode_video(vid[i:i + 11]) for i in range(0, len(vid), 11)])
        af = be.encode_audio(aud)
        vclips = np.stack([vf[a:a + 14].reshape(14 * 8, -1) for a, _ in pairs])
        aclips = np.stack([af[b:b + 14].reshape(14 * 6, -1) for _, b in pairs])
        probs[precision] = _probs(be.head(vclips, aclips))
    ref = probs["fp32"]
    for precision in ("fp16", "int8"):
        same_top1 = float(np.mean(probs[precision].argmax(1) == ref.argmax(1)))
        max_dp = float(np.abs(probs[precision] - ref).max())
        print(f"{precision} vs fp32 on {len(pairs)} clips: same top-1 {same_top1:.4f}, max |dp| {max_dp:.2e}")
        assert same_top1 >= 0.99 and max_dp <= 0.01


def _fake_tensorrt_builder(version: str, log: dict):
    """A `tensorrt` module recording what build_engine asks of the builder."""
    import types

    class Config:
        def __init__(self):
            self.profiles = []

        def set_memory_pool_limit(self, pool, size):
            log["workspace"] = size

        def create_timing_cache(self, data):
            log.setdefault("cache_in", []).append(bytes(data))
            return types.SimpleNamespace(serialize=lambda: b"cache-v%d" % len(log["cache_in"]))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            self.profiles.append(profile.shapes)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log["flags"] = flags
            return "network"

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            profile = types.SimpleNamespace(shapes={})
            profile.set_shape = lambda name, lo, opt, hi: profile.shapes.__setitem__(name, (lo, opt, hi))
            return profile

        def build_serialized_network(self, network, config):
            log["profiles"] = config.profiles
            return b"engine bytes"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            log["parsed"] = path
            return True

    return types.SimpleNamespace(
        __version__=version, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None}),
        Builder=Builder, OnnxParser=OnnxParser, MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0))


@pytest.mark.parametrize("version, flags", [("10.13.0.35", 1), ("11.4.0.106", 0)])
def test_engine_build_profiles_timing_cache_and_strong_typing(cli_export, tmp_path, monkeypatch, version, flags):
    from sync_sdk.export_onnx import tensorrt_build
    from sync_sdk.export_onnx.graphs import stage_io
    out, _ = cli_export
    log = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_builder(version, log))
    monkeypatch.setattr(tensorrt_build, "gpu_info", lambda device=0: ("9.0", "Fake GPU"))
    cache = tmp_path / "timing.cache"
    io = stage_io(TINY)
    ranges = tensorrt_build.profiles("visual_encoder", 14, max_clips=4)
    info = tensorrt_build.build_engine(out / "visual_encoder.fp16.onnx", tmp_path / "v.engine", io["visual_encoder"],
                                       ranges, cache)
    assert info == {"tensorrt_version": version, "compute_capability": "9.0", "gpu": "Fake GPU",
                    "profiles": [[1, 1, 1], [1, 14, 56]]}
    assert log["flags"] == flags  # strongly typed (the flag is implicit, and deprecated, from TensorRT 11)
    assert log["parsed"] == str(out / "visual_encoder.fp16.onnx")
    assert log["profiles"] == [{"vid": ((1, 16, 3, 224, 224),) * 3},
                               {"vid": ((1, 16, 3, 224, 224), (14, 16, 3, 224, 224), (56, 16, 3, 224, 224))}]
    assert (tmp_path / "v.engine").read_bytes() == b"engine bytes" and cache.read_bytes() == b"cache-v1"
    tensorrt_build.build_engine(out / "head.fp16.onnx", tmp_path / "h.engine", io["head"],
                                tensorrt_build.profiles("head", 14, max_clips=4), cache)
    assert log["cache_in"] == [b"", b"cache-v1"]  # the second build starts from the first one's cache
    assert log["profiles"] == [{"vfeat": ((1, 112, TINY.v_dim), (1, 112, TINY.v_dim), (4, 112, TINY.v_dim)),
                                "afeat": ((1, 84, TINY.a_dim), (1, 84, TINY.a_dim), (4, 84, TINY.a_dim))}]


def test_load_model_from_a_checkpoint_file(tmp_path):
    from sync_sdk.export_onnx import random_state_dict
    from sync_sdk.weights.checkpoint import save_checkpoint
    model, model_id = load_model("tiny", seed=2)
    assert model_id == "tiny-random-seed2"
    weights = random_state_dict(model, seed=2)
    save_checkpoint(tmp_path / "my-model.safetensors", weights, TINY)
    loaded, loaded_id = load_model(str(tmp_path / "my-model.safetensors"))
    assert loaded_id == "my-model" and loaded.config == TINY
    for name, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), weights[name])
