"""Checkpoint loading without torch: official .pt layout, bare state dicts, safetensors, bad inputs.

torch is used here only to write .pt files the way the official code does (torch.save).
"""
import json
import subprocess
import sys
import zipfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sync_sdk.config import ModelConfig
from sync_sdk.errors import CheckpointError, CheckpointNotFoundError, SyncSDKWarning, UnsafeCheckpointError
from sync_sdk.weights.checkpoint import (
    POS_EMB_KEY,
    convert_checkpoint,
    expected_shapes,
    infer_config,
    load_checkpoint,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
TINY = ModelConfig.named("tiny")


def _torch():
    return pytest.importorskip("torch")


def _touch(path):
    """Runs only if a loader executes pickled code."""
    Path(path).write_text("pickled code ran")


class _Args:
    """Stands in for the official OmegaConf `args`: unpickling it for real would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _touch, (str(self.marker),)


class _Config:
    """Pickled like OmegaConf's DictConfig (NEWOBJ + BUILD); restoring its state would create a marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        _touch(state["marker"])


class _Box(dict):
    """A dict subclass the restricted loader does not know (needs allow_unsafe)."""


def _random_sd(cfg=TINY, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(cfg).items()}


def _tensors(sd):
    torch = _torch()
    return OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in sd.items())


def _official_pt(path, sd, marker, **extra):
    """An official-layout checkpoint: {'args', 'model', 'optimizer', ...}, written by torch.save."""
    torch = _torch()
    model = _tensors(sd)
    first = next(iter(model.values()))
    ckpt = {"args": _Args(marker), "cfg": _Config(marker), "loss": 0.5, "metrics": {"acc": 0.9}, "epoch": 3,
            "optimizer": {"state": {0: {"exp_avg": torch.zeros_like(first)}}, "param_groups": [{"lr": 1e-4}]},
            "model": model, "scaler": {"scale": 65536.0}, "lr_scheduler": {"last_epoch": 3},
            "model_type": "Synchformer", **extra}
    torch.save(ckpt, path)
    return path


def _assert_same(loaded, sd):
    assert list(loaded) == list(sd)
    for k, v in sd.items():
        assert loaded[k].dtype == np.float32 and loaded[k].flags.c_contiguous, k
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)


@pytest.fixture
def ref_cfg(tiny_reference_dir):
    return ModelConfig.from_reference_json(tiny_reference_dir / "config.json")


@pytest.fixture
def ref_sd(tiny_reference_dir):
    with np.load(tiny_reference_dir / "state_dict.npz") as z:
        return {k: z[k] for k in z.files}


# --- expected shapes and config inference ----------------------------------------------------
@pytest.mark.parametrize("variant", ["sync", "synchronizability"])
def test_expected_shapes_equal_the_official_manifest(reference_root, variant):
    manifest = json.loads((reference_root / "state_dict_manifest.json").read_text())[variant]["keys"]
    want = {k["name"]: tuple(k["shape"]) for k in manifest}
    got = expected_shapes(variant)
    assert got == want and list(got) == list(want)


@pytest.mark.parametrize("variant,npz", [("sync", "state_dict.npz"),
                                         ("synchronizability", "state_dict_synchronizability.npz")])
def test_expected_shapes_equal_the_tiny_reference(tiny_reference_dir, variant, npz):
    cfg = ModelConfig.from_reference_json(tiny_reference_dir / "config.json", variant)
    with np.load(tiny_reference_dir / npz) as z:
        assert expected_shapes(cfg) == {k: z[k].shape for k in z.files}
        assert list(expected_shapes(cfg)) == list(z.files)


def _zeros(cfg, rows=None):
    """Full-size stand-ins without memory: broadcast views of one zero."""
    shapes = expected_shapes(cfg)
    if rows is not None:
        shapes[POS_EMB_KEY] = (1, rows, cfg.h_dim)
    return {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}


@pytest.mark.parametrize("variant", ["sync", "synchronizability"])
def test_infer_config_of_official_models(variant):
    assert infer_config(_zeros(ModelConfig.named(variant))) == ModelConfig.named(variant)


def test_infer_config_keeps_the_official_segment_count_for_longer_tables():
    """A synchronizability checkpoint with a 198-row table is still the 13-segment model (rows get trimmed)."""
    cfg = infer_config(_zeros(ModelConfig.named("synchronizability"), rows=198))
    assert cfg == ModelConfig.named("synchronizability") and cfg.pos_emb_rows == 184


def test_infer_config_of_other_depths_reads_segments_from_the_table():
    cfg = replace(ModelConfig.named("sync"), a_depth=2, v_depth=3, h_depth=1, n_segments=4)
    assert infer_config(_zeros(cfg)) == cfg


def test_non_official_widths_need_a_stored_or_given_config():
    with pytest.raises(CheckpointError, match="head counts"):
        infer_config(_random_sd())


# --- official .pt files, read without torch --------------------------------------------------
def test_official_pt_loads_without_running_pickled_code(tmp_path, ref_sd, ref_cfg):
    marker = tmp_path / "marker"
    path = _official_pt(tmp_path / "ckpt.pt", ref_sd, marker)
    ck = load_checkpoint(path, config=ref_cfg)
    assert not marker.exists()
    _assert_same(ck.state_dict, ref_sd)
    assert ck.config == ref_cfg and ck.source == str(path) and ck.file_format == "torch"
    # control: a plain unpickler does run the code of each object
    for obj in (_Args(marker), _Config(marker)):
        _torch().save({"args": obj}, tmp_path / "args.pt")
        _torch().load(tmp_path / "args.pt", weights_only=False)
        assert marker.exists()
        marker.unlink()


def test_loading_needs_no_torch_at_run_time(tmp_path, ref_sd, ref_cfg):
    path = _official_pt(tmp_path / "ckpt.pt", ref_sd, tmp_path / "marker")
    code = ("import sys; sys.modules['torch'] = None; import numpy as np\n"
            "from sync_sdk.weights.checkpoint import load_checkpoint\nfrom sync_sdk.config import ModelConfig\n"
            f"ck = load_checkpoint({str(path)!r}, config=ModelConfig.from_dict({ref_cfg.to_dict()!r}))\n"
            "print(len(ck.state_dict), float(sum(np.float64(v.sum()) for v in ck.state_dict.values())))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    n, total = out.stdout.split()
    assert int(n) == len(ref_sd)
    assert float(total) == pytest.approx(sum(np.float64(v.sum()) for v in ref_sd.values()), rel=1e-12)


def test_bare_state_dict_pth(tmp_path, ref_sd, ref_cfg):
    path = tmp_path / "synchformer_state_dict.pth"
    _torch().save(_tensors(ref_sd), path)
    _assert_same(load_checkpoint(path, config=ref_cfg).state_dict, ref_sd)


def test_module_prefix_is_stripped(tmp_path):
    sd = _random_sd()
    path = tmp_path / "ddp.pt"
    _torch().save({"model": OrderedDict(("module." + k, v) for k, v in _tensors(sd).items())}, path)
    _assert_same(load_checkpoint(path, config=TINY).state_dict, sd)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_low_and_high_precision_storages_become_float32(tmp_path, dtype):
    torch = _torch()
    sd = _random_sd(seed=1)
    tensors = OrderedDict((k, v.to(getattr(torch, dtype))) for k, v in _tensors(sd).items())
    path = tmp_path / f"{dtype}.pt"
    torch.save({"model": tensors}, path)
    want = {k: v.float().numpy() for k, v in tensors.items()}
    if dtype != "float64":
        assert not all(np.array_equal(want[k], sd[k]) for k in sd)  # the rounding is visible
    _assert_same(load_checkpoint(path, config=TINY).state_dict, want)


def test_strided_views_and_shared_storages(tmp_path):
    """Transposed (column-major) tensors, offsets into one shared storage, broadcast (stride 0) views."""
    torch = _torch()
    sd = _random_sd(seed=2)
    flat = torch.cat([torch.from_numpy(v).flatten() for v in sd.values()])
    tensors, offset = OrderedDict(), 0
    for k, v in sd.items():
        t = flat[offset:offset + v.size].view(v.shape)
        offset += v.size
        tensors[k] = t.t().contiguous().t() if t.ndim == 2 else t
    tensors["vproj.bias"] = torch.tensor([0.25]).expand(sd["vproj.bias"].shape)
    sd["vproj.bias"] = np.full(sd["vproj.bias"].shape, 0.25, np.float32)
    assert not tensors["vproj.weight"].is_contiguous() and tensors[POS_EMB_KEY].storage_offset() > 0
    path = tmp_path / "views.pt"
    torch.save({"model": tensors}, path)
    _assert_same(load_checkpoint(path, config=TINY).state_dict, sd)


def test_synchronizability_model_is_detected(tmp_path, tiny_reference_dir):
    cfg = ModelConfig.from_reference_json(tiny_reference_dir / "config.json", "synchronizability")
    with np.load(tiny_reference_dir / "state_dict_synchronizability.npz") as z:
        sd = {k: z[k] for k in z.files}
    path = _official_pt(tmp_path / "syncability.pt", sd, tmp_path / "marker")
    ck = load_checkpoint(path, config=cfg)
    assert ck.config.variant == "synchronizability" and "transformer.sync_head.weight" in ck.state_dict
    with pytest.raises(CheckpointError, match="synchronizability model.*config is for the sync model"):
        load_checkpoint(path, config=cfg.with_variant("sync"))


def test_longer_pos_emb_is_trimmed_shorter_is_refused(tmp_path, ref_sd, ref_cfg):
    path = tmp_path / "ckpt.pt"
    _torch().save({"model": _tensors(ref_sd)}, path)  # 30 rows = 2 segments
    with pytest.warns(SyncSDKWarning, match="first 16"):
        ck = load_checkpoint(path, config=replace(ref_cfg, n_segments=1))
    np.testing.assert_array_equal(ck.state_dict[POS_EMB_KEY], ref_sd[POS_EMB_KEY][:, :16])
    with pytest.raises(CheckpointError, match=f"{path}.*30 rows.*needs 44"):
        load_checkpoint(path, config=replace(ref_cfg, n_segments=3))


# --- safetensors ------------------------------------------------------------------------------
def test_safetensors_round_trip_keeps_config(tmp_path):
    sd = _random_sd(seed=3)
    path = save_checkpoint(tmp_path / "sub" / "model.safetensors", sd, TINY)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp file left
    ck = load_checkpoint(path)  # tiny widths: the config comes from the metadata
    assert ck.config == TINY and ck.file_format == "safetensors"
    _assert_same(ck.state_dict, sd)


def test_convert_official_pt_to_safetensors(tmp_path, ref_sd, ref_cfg):
    src = _official_pt(tmp_path / "ckpt.pt", ref_sd, tmp_path / "marker")
    convert_checkpoint(src, tmp_path / "ckpt.safetensors", config=ref_cfg)
    ck = load_checkpoint(tmp_path / "ckpt.safetensors")
    assert ck.config == ref_cfg and not (tmp_path / "marker").exists()
    _assert_same(ck.state_dict, ref_sd)


def test_save_refuses_a_state_dict_that_does_not_fit(tmp_path):
    sd = _random_sd()
    del sd["aproj.bias"]
    with pytest.raises(CheckpointError, match="missing keys.*aproj.bias"):
        save_checkpoint(tmp_path / "m.safetensors", sd, TINY)
    assert not list(tmp_path.iterdir())


def test_safetensors_without_config_of_tiny_widths(tmp_path):
    from safetensors.numpy import save_file
    save_file(_random_sd(), tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match="bare.safetensors.*head counts"):
        load_checkpoint(tmp_path / "bare.safetensors")
    assert load_checkpoint(tmp_path / "bare.safetensors", config="tiny").config == TINY


def test_safetensors_with_a_broken_config(tmp_path):
    from safetensors.numpy import save_file
    save_file(_random_sd(), tmp_path / "bad.safetensors", metadata={"config": "{not json"})
    with pytest.raises(CheckpointError, match="bad.safetensors.*invalid model config"):
        load_checkpoint(tmp_path / "bad.safetensors")


# --- unsafe files ------------------------------------------------------------------------------
def test_unknown_objects_need_allow_unsafe(tmp_path):
    sd = _random_sd(seed=4)
    path = tmp_path / "boxed.pt"
    _torch().save({"model": _Box(_tensors(sd))}, path)
    with pytest.raises(UnsafeCheckpointError, match=f"{path}.*_Box.*allow_unsafe=True"):
        load_checkpoint(path, config=TINY)
    with pytest.warns(SyncSDKWarning, match="runs code"):
        ck = load_checkpoint(path, allow_unsafe=True, config=TINY)
    assert ck.file_format == "torch-unsafe"
    _assert_same(ck.state_dict, sd)


def test_legacy_torch_format_needs_allow_unsafe(tmp_path):
    sd = _random_sd(seed=5)
    path = tmp_path / "legacy.pt"
    _torch().save({"model": _tensors(sd)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="legacy"):
        load_checkpoint(path, config=TINY)
    with pytest.warns(SyncSDKWarning):
        _assert_same(load_checkpoint(path, allow_unsafe=True, config=TINY).state_dict, sd)


# --- bad input ------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="nope.pt.*not found") as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"model: sync\nepoch: 3\n", b""],
                         ids=["random-bytes", "text", "empty"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}: not a checkpoint"):
        load_checkpoint(path)


def test_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/readme.txt", "hello")
    with pytest.raises(CheckpointError, match=f"{path}: a zip archive without data.pkl"):
        load_checkpoint(path)


def test_truncated_pt(tmp_path):
    full = _official_pt(tmp_path / "full.pt", _random_sd(), tmp_path / "marker").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path, config=TINY)


def test_corrupt_tensor_data(tmp_path):
    """A flipped byte inside a stored weight fails the zip CRC check."""
    path = tmp_path / "ckpt.pt"
    _torch().save({"model": _tensors(_random_sd())}, path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo([n for n in zf.namelist() if n.endswith("/data/5")][0])
    raw = bytearray(path.read_bytes())
    name_len, extra_len = (int.from_bytes(raw[info.header_offset + i:info.header_offset + i + 2], "little")
                           for i in (26, 28))
    raw[info.header_offset + 30 + name_len + extra_len + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=f"{path}.*data/5"):
        load_checkpoint(path, config=TINY)


def test_checkpoint_of_another_model(tmp_path):
    torch = _torch()
    path = tmp_path / "resnet.pt"
    torch.save({"model": {"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}}, path)
    with pytest.raises(CheckpointError, match=f"{path}.*not a Synchformer checkpoint.*conv1.weight"):
        load_checkpoint(path)


def test_feature_extractor_checkpoint_without_head(tmp_path):
    sd = {k: v for k, v in _random_sd().items() if not k.startswith("transformer.")}
    path = tmp_path / "stage1.pt"
    _torch().save({"model": _tensors(sd)}, path)
    with pytest.raises(CheckpointError, match="neither of transformer.off_head"):
        load_checkpoint(path)


def test_a_pickle_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "metrics.pt"
    _torch().save({"epoch": 3, "loss": 0.5}, path)
    with pytest.raises(CheckpointError, match="not a state dict: entry 'epoch' is a int"):
        load_checkpoint(path)


def _npz(path, sd):
    np.savez(path, **sd)
    return path


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    sd = _random_sd()
    del sd["transformer.blocks.1.attn.key.bias"]
    sd["transformer.extra.weight"] = np.zeros(3, np.float32)
    sd["aproj.weight"] = np.zeros((32, 47), np.float32)
    path = _npz(tmp_path / "bad.npz", sd)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, config=TINY)
    msg = str(e.value)
    assert msg.startswith(f"{path}: sync model")
    assert "missing keys (1): transformer.blocks.1.attn.key.bias" in msg
    assert "unexpected keys (1): transformer.extra.weight" in msg
    assert "aproj.weight (32, 47) (expected (32, 48))" in msg


def test_integer_weights_are_refused(tmp_path):
    sd = _random_sd()
    sd["vproj.bias"] = np.zeros(sd["vproj.bias"].shape, np.int64)
    with pytest.raises(CheckpointError, match="vproj.bias has dtype int64"):
        load_checkpoint(_npz(tmp_path / "int.npz", sd), config=TINY)


def test_npz_state_dict_loads(tmp_path):
    sd = _random_sd(seed=6)
    ck = load_checkpoint(_npz(tmp_path / "sd.npz", sd), config=TINY)
    assert ck.file_format == "npz"
    _assert_same(ck.state_dict, sd)


def test_module_names_round_trip_to_official_names_and_order():
    """to_module_names joins q, k, v into qkv rows (q | k | v); to_official_names gives back the
    official names, order and arrays. An incomplete q/k/v set keeps its official names."""
    from sync_sdk.weights.state_dict_rules import to_module_names, to_official_names
    sd = _random_sd()
    ours = to_module_names(sd, np.concatenate)
    assert not [k for k in ours if "attention.attention" in k or ".ast." in k or "self_attn" in k]
    qkv = ours["transformer.blocks.1.attn.qkv.weight"]
    h = TINY.h_dim
    np.testing.assert_array_equal(qkv[:h], sd["transformer.blocks.1.attn.query.weight"])
    np.testing.assert_array_equal(qkv[h:2 * h], sd["transformer.blocks.1.attn.key.weight"])
    np.testing.assert_array_equal(ours["afeat_extractor.blocks.0.attn.qkv.bias"][TINY.a_dim:2 * TINY.a_dim],
                                  sd["afeat_extractor.ast.encoder.layer.0.attention.attention.key.bias"])
    assert ours["vfeat_extractor.spatial_attn_agg.attn.qkv.weight"] is \
        sd["vfeat_extractor.spatial_attn_agg.self_attn.in_proj_weight"]
    back = to_official_names(ours)
    assert list(back) == list(sd) == list(expected_shapes(TINY))
    assert all(np.array_equal(back[k], sd[k]) for k in sd)
    partial = dict(sd)
    del partial["transformer.blocks.1.attn.key.bias"]
    ours = to_module_names(partial, np.concatenate)
    assert "transformer.blocks.1.attn.qkv.bias" not in ours and "transformer.blocks.1.attn.query.bias" in ours
