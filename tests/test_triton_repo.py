"""Triton model repository from an export: layout, config.pbtxt content (parsed as protobuf text
format against the ModelConfig fields used), and the BLS model run against a stand-in for Triton's
Python backend that serves the repository's own ONNX files (logits equal the SDK's)."""
import asyncio
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sync_sdk.errors import BackendError, InputError
from sync_sdk.serving.triton_repo import BLS_SOURCE, write_triton_repo
from sync_sdk.weights.manifest import STAGES, read_manifest, sha256_file

pytest.importorskip("onnxruntime")
text_format = pytest.importorskip("google.protobuf.text_format")
NAME = "synchformer"
STAGE_MODELS = [f"{NAME}_{s}" for s in STAGES]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """The bundled tiny model's export, else a fresh export of the tiny config (needs torch)."""
    from sync_sdk.runtime.loading import bundled_models, resolve_model
    if "synthetic-tiny" in bundled_models():
        found = resolve_model("synthetic-tiny").export_dir
        if found is not None:
            return found
    pytest.importorskip("torch")
    from sync_sdk.export_onnx import export_model
    out = tmp_path_factory.mktemp("tiny_export")
    export_model("tiny", out, precision="fp32", backend="onnxruntime", say=lambda s: None)
    return out


@pytest.fixture(scope="module")
def repo(export_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "models"
    info = write_triton_repo(export_dir, out, device="cpu")
    assert info["kind"] == "onnx" and info["max_clips"] == 4 and sorted(info["models"]) == sorted(STAGE_MODELS + [NAME])
    return out


# ---------------------------------------------------------------------------- ModelConfig subset
def _model_config_class():
    """A message class with the ModelConfig fields (names, types, enums) the repository uses."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="model_config_subset.proto", package="inference",
                                             syntax="proto3")
    fdp.enum_type.add(name="DataType").value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=n, number=i)
        for i, n in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32"]))
    kinds = fdp.message_type.add(name="ModelInstanceGroup")
    kinds.enum_type.add(name="Kind").value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=n, number=i)
        for i, n in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU"]))

    def fields(msg, *specs):
        for i, (name, ftype, label, type_name) in enumerate(specs, start=1):
            f = msg.field.add(name=name, number=i, type=ftype, label=label)
            if type_name:
                f.type_name = type_name

    one, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    fields(kinds, ("name", F.TYPE_STRING, one, None), ("kind", F.TYPE_ENUM, one, ".inference.ModelInstanceGroup.Kind"),
           ("count", F.TYPE_INT32, one, None), ("gpus", F.TYPE_INT32, rep, None), ("profile", F.TYPE_STRING, rep, None))
    for io in ("ModelInput", "ModelOutput"):
        fields(fdp.message_type.add(name=io), ("name", F.TYPE_STRING, one, None),
               ("data_type", F.TYPE_ENUM, one, ".inference.DataType"), ("dims", F.TYPE_INT64, rep, None))
    fields(fdp.message_type.add(name="ModelDynamicBatching"), ("preferred_batch_size", F.TYPE_INT32, rep, None),
           ("max_queue_delay_microseconds", F.TYPE_UINT64, one, None))
    fields(fdp.message_type.add(name="ModelParameter"), ("string_value", F.TYPE_STRING, one, None))
    config = fdp.message_type.add(name="ModelConfig")
    entry = config.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    fields(entry, ("key", F.TYPE_STRING, one, None), ("value", F.TYPE_MESSAGE, one, ".inference.ModelParameter"))
    fields(config, ("name", F.TYPE_STRING, one, None), ("platform", F.TYPE_STRING, one, None),
           ("backend", F.TYPE_STRING, one, None), ("max_batch_size", F.TYPE_INT32, one, None),
           ("input", F.TYPE_MESSAGE, rep, ".inference.ModelInput"),
           ("output", F.TYPE_MESSAGE, rep, ".inference.ModelOutput"),
           ("instance_group", F.TYPE_MESSAGE, rep, ".inference.ModelInstanceGroup"),
           ("dynamic_batching", F.TYPE_MESSAGE, one, ".inference.ModelDynamicBatching"),
           ("parameters", F.TYPE_MESSAGE, rep, ".inference.ModelConfig.ParametersEntry"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfigMsg = _model_config_class()


def load_config(repo: Path, model: str):
    return text_format.Parse((repo / model / "config.pbtxt").read_text(), ModelConfigMsg())


def enum_name(msg, field: str) -> str:
    return msg.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[getattr(msg, field)].name


def config_json(repo: Path, model: str) -> str:
    """The model config as Triton hands it to a Python model (args["model_config"])."""
    from google.protobuf import json_format
    return json.dumps(json_format.MessageToDict(load_config(repo, model), preserving_proto_field_name=True))


# ---------------------------------------------------------------------------- layout and configs
def test_layout_and_files(repo, export_dir):
    assert sorted(p.name for p in repo.iterdir()) == sorted(STAGE_MODELS + [NAME])
    for stage in STAGES:
        model = repo / f"{NAME}_{stage}"
        assert sorted(p.relative_to(model).as_posix() for p in model.rglob("*")) == \
            ["1", "1/model.onnx", "config.pbtxt"]
        assert sha256_file(model / "1" / "model.onnx") == sha256_file(export_dir / f"{stage}.onnx")
    assert (repo / NAME / "1" / "model.py").read_text() == BLS_SOURCE.read_text()


def test_stage_configs_match_the_onnx_graphs(repo, export_dir):
    import onnxruntime as ort
    manifest = read_manifest(export_dir)
    n = manifest.config.n_segments
    for stage in STAGES:
        cfg = load_config(repo, f"{NAME}_{stage}")
        assert cfg.name == f"{NAME}_{stage}" and cfg.platform == "onnxruntime_onnx"
        assert cfg.max_batch_size == (4 if stage == "head" else 4 * n)
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        assert [(enum_name(g, "kind"), g.count) for g in cfg.instance_group] == [("KIND_CPU", 1)]
        sess = ort.InferenceSession(str(repo / f"{NAME}_{stage}" / "1" / "model.onnx"),
                                    providers=["CPUExecutionProvider"])
        for declared, actual, spec in [(cfg.input, sess.get_inputs(), manifest.stage_io(stage)["inputs"]),
                                       (cfg.output, sess.get_outputs(), manifest.stage_io(stage)["outputs"])]:
            assert [t.name for t in declared] == [t.name for t in actual] == [s["name"] for s in spec]
            for t, a, s in zip(declared, actual, spec):
                assert list(t.dims) == s["shape"][1:] == list(a.shape[1:])  # batch axis left out
                assert isinstance(a.shape[0], str)  # ... and dynamic in the graph
                assert a.type == "tensor(float)" and enum_name(t, "data_type") == "TYPE_FP32"


def test_bls_config_wires_the_stage_models(repo, export_dir):
    config = read_manifest(export_dir).config
    cfg = load_config(repo, NAME)
    assert cfg.backend == "python" and not cfg.platform and cfg.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in cfg.input] == [
        ("vid", [config.n_segments, 16, 3, 224, 224]), ("aud", [config.n_segments, 1, 128, 66])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [
        ("logits", [21]), ("probs", [21]), ("offset_sec", [1]), ("class_index", [1])]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    for key, stage in [("audio_model", "audio_encoder"), ("visual_model", "visual_encoder"), ("head_model", "head")]:
        assert params[key] == f"{NAME}_{stage}" and (repo / params[key] / "config.pbtxt").is_file()
    assert params["n_segments"] == str(config.n_segments) and params["FORCE_CPU_ONLY_INPUT_TENSORS"] == "yes"
    assert json.loads(params["offset_grid_sec"])[0] == -2.0 and json.loads(params["offset_grid_sec"])[10] == 0.0


def test_existing_models_are_not_replaced_unless_asked(repo, export_dir, tmp_path):
    with pytest.raises(BackendError, match="already exist"):
        write_triton_repo(export_dir, repo, device="cpu")
    other = tmp_path / "models"
    (other / "unrelated").mkdir(parents=True)
    write_triton_repo(export_dir, other, name="tiny", max_clips=2, queue_delay_us=500)
    write_triton_repo(export_dir, other, name="tiny", max_clips=2, overwrite=True)
    assert (other / "unrelated").is_dir() and (other / "tiny_head" / "1" / "model.onnx").is_file()
    assert load_config(other, "tiny_head").max_batch_size == 2
    assert {k: v.string_value for k, v in load_config(other, "tiny").parameters.items()}["head_model"] == "tiny_head"
    with pytest.raises(InputError):
        write_triton_repo(export_dir, other, name="bad name", overwrite=True)


def test_tensorrt_plans_take_their_profiles(export_dir, tmp_path):
    """An export with engines (faked: the manifest entries and hashes are what the repo reads)."""
    fake = tmp_path / "export"
    shutil.copytree(export_dir, fake)
    manifest = json.loads((fake / "manifest.json").read_text())
    n = manifest["config"]["n_segments"]
    for stage in STAGES:
        name = f"{stage}.fp32.engine"
        (fake / name).write_bytes(f"plan of {stage}".encode())
        manifest["files"][name] = {"stage": stage, "kind": "tensorrt", "precision": "fp32",
                                   "sha256": sha256_file(fake / name), "bytes": (fake / name).stat().st_size,
                                   "profiles": [[1, 1, 3]] if stage == "head" else [[1, 1, 1], [1, n, 3 * n]]}
    (fake / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "models"
    info = write_triton_repo(fake, out)
    assert info["kind"] == "tensorrt" and info["max_clips"] == 3
    for stage in STAGES:
        cfg = load_config(out, f"{NAME}_{stage}")
        assert cfg.platform == "tensorrt_plan"
        assert (out / f"{NAME}_{stage}" / "1" / "model.plan").read_bytes() == f"plan of {stage}".encode()
        assert cfg.max_batch_size == (3 if stage == "head" else 3 * n)
        assert list(cfg.instance_group[0].profile) == (["0"] if stage == "head" else ["1"])
    assert load_config(out, NAME).max_batch_size == 3
    assert write_triton_repo(fake, tmp_path / "cpu", device="cpu")["kind"] == "onnx"  # plans need a GPU
    with pytest.raises(InputError, match="at most 3 clips"):
        write_triton_repo(fake, tmp_path / "m2", max_clips=4)
    with pytest.raises(InputError, match="GPU"):
        write_triton_repo(fake, tmp_path / "m3", device="cpu", kind="tensorrt")
    (fake / "head.fp32.engine").write_bytes(b"changed")
    with pytest.raises(BackendError, match="sha256|bytes"):
        write_triton_repo(fake, tmp_path / "m4")


def test_build_engine_triton_repo_flag(export_dir, tmp_path, monkeypatch):
    """`export/build_engine.py --triton-repo DIR` lays out the repository of the export it wrote
    (the export itself replaced by a copy of a finished one)."""
    import sync_sdk.export_onnx as exporter
    script = Path(__file__).parents[1] / "export" / "build_engine.py"
    spec = importlib.util.spec_from_file_location("build_engine", script)
    build_engine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_engine)
    monkeypatch.setattr(exporter, "export_model", lambda ckpt, out, **kw: shutil.copytree(export_dir, out))
    out, repo = tmp_path / "export", tmp_path / "models"
    assert build_engine.main(["--checkpoint", "tiny", "--out", str(out), "--backend", "onnxruntime",
                              "--triton-repo", str(repo), "--triton-device", "cpu"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == sorted(STAGE_MODELS + [NAME])
    assert enum_name(load_config(repo, f"{NAME}_head").instance_group[0], "kind") == "KIND_CPU"
    assert build_engine.main(["--checkpoint", "tiny", "--out", str(tmp_path / "e2"), "--backend", "onnxruntime",
                              "--triton-repo", str(repo)]) == 0  # replaces its own models
    assert enum_name(load_config(repo, f"{NAME}_head").instance_group[0], "kind") == "KIND_GPU"


# ---------------------------------------------------------------------------- the BLS model, run
class FakeTriton:
    """Stand-in for `triton_python_backend_utils`: BLS requests run the repository's ONNX files."""

    TRITONSERVER_MEMORY_CPU = 0

    def __init__(self, repo: Path):
        import onnxruntime as ort
        self.sessions = {p.parent.parent.name: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                         for p in repo.glob("*/1/model.onnx")}
        self.calls = []
        outer = self

        class Tensor:
            def __init__(self, name, array):
                self._name, self._array = name, np.asarray(array)

            def name(self):
                return self._name

            def as_numpy(self):
                return self._array

        class InferenceResponse:
            def __init__(self, output_tensors, error=None):
                self.output_tensors, self.error = output_tensors, error

            def has_error(self):
                return self.error is not None

        class InferenceRequest:
            def __init__(self, model_name, requested_output_names, inputs, preferred_memory=None):
                self.model, self.outputs, self.inputs = model_name, requested_output_names, inputs

            async def async_exec(self):
                feeds = {t.name(): t.as_numpy() for t in self.inputs}
                outer.calls.append((self.model, {k: v.shape for k, v in feeds.items()}))
                arrays = outer.sessions[self.model].run(self.outputs, feeds)
                return InferenceResponse([Tensor(n, a) for n, a in zip(self.outputs, arrays)])

        self.Tensor, self.InferenceRequest, self.InferenceResponse = Tensor, InferenceRequest, InferenceResponse
        self.TritonError = self.TritonModelException = RuntimeError
        self.PreferredMemory = lambda kind, device=0: (kind, device)
        self.get_input_tensor_by_name = self.get_output_tensor_by_name = \
            lambda holder, name: next(t for t in (holder.inputs if hasattr(holder, "inputs") else holder.output_tensors)
                                      if t.name() == name)


def load_bls(repo: Path, fake: FakeTriton):
    module = types.ModuleType("triton_python_backend_utils")
    module.__dict__.update({k: getattr(fake, k) for k in dir(fake) if not k.startswith("_")})
    sys.modules["triton_python_backend_utils"] = module
    try:
        spec = importlib.util.spec_from_file_location("synchformer_bls", repo / NAME / "1" / "model.py")
        bls = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bls)
    finally:
        del sys.modules["triton_python_backend_utils"]
    model = bls.TritonPythonModel()
    model.initialize({"model_config": config_json(repo, NAME)})
    return model


def test_bls_model_gives_the_sdk_logits(repo, export_dir):
    from tiny_engine import single_view_logits

    from sync_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sync_sdk.engine import SyncEngine
    from sync_sdk.results import SyncResult

    fake = FakeTriton(repo)
    model = load_bls(repo, fake)
    n = read_manifest(export_dir).config.n_segments
    rng = np.random.default_rng(0)
    vid = rng.normal(0, 1, (3, n, 16, 3, 224, 224)).astype(np.float32)
    aud = rng.normal(0, 1, (3, n, 1, 128, 66)).astype(np.float32)
    requests = [types.SimpleNamespace(inputs=[fake.Tensor("vid", vid[:2]), fake.Tensor("aud", aud[:2])]),
                types.SimpleNamespace(inputs=[fake.Tensor("vid", vid[2:, :n - 1]),
                                              fake.Tensor("aud", aud[2:, :n - 1])]),
                types.SimpleNamespace(inputs=[fake.Tensor("vid", vid[2:]), fake.Tensor("aud", aud[2:])])]
    responses = asyncio.run(model.execute(requests))

    engine = SyncEngine(OnnxRuntimeBackend.from_dir(export_dir))
    expected = single_view_logits(engine.encoder, vid, aud)
    ok = [responses[0], responses[2]]
    got = np.concatenate([fake.get_output_tensor_by_name(r, "logits").as_numpy() for r in ok])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for r, rows in zip(ok, [expected[:2], expected[2:]]):
        for lg, off, k, p in zip(rows, *(fake.get_output_tensor_by_name(r, o).as_numpy()
                                         for o in ("offset_sec", "class_index", "probs"))):
            res = SyncResult.from_logits(lg)
            assert (round(float(off[0]), 1), int(k[0])) == (res.offset_sec, res.class_index)
            np.testing.assert_allclose(p, res.probs, atol=1e-6)
    assert responses[1].has_error() and f"(b,{n},16,3,224,224)" in str(responses[1].error)
    # every clip's segments went to each encoder in one request of n segments
    enc = [(m, shapes) for m, shapes in fake.calls if m.endswith("encoder")]
    assert len(enc) == 6 and all(next(iter(s.values()))[0] == n for _, s in enc)
    assert [s["vfeat"][0] for m, s in fake.calls if m.endswith("head")] == [2, 1]
