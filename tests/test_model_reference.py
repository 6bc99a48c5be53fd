"""The PyTorch model equals the official Synchformer on the tiny reference set (float32)."""
from functools import lru_cache

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sync_sdk.errors import CheckpointError  # noqa: E402
from sync_sdk.model import ModelConfig, build_model, load_weights  # noqa: E402
from sync_sdk.weights.state_dict_rules import POS_EMB_KEY  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-4)


def _model(ref, variant, npz):
    cfg = ModelConfig.from_reference_json(ref / "config.json", variant)
    return load_weights(build_model(cfg), dict(np.load(ref / npz)))


@lru_cache(maxsize=1)
def _data(ref):
    inp, out = np.load(ref / "inputs.npz"), np.load(ref / "outputs.npz")
    vid = torch.from_numpy(inp["vid_lut"][inp["vid_uint8"]])
    return vid, torch.from_numpy(inp["aud"]), {k: out[k] for k in out.files}


@pytest.fixture
def ref(tiny_reference_dir):
    return tiny_reference_dir


@pytest.fixture
def data(ref):
    """vid (B, S, 16, 3, 224, 224) = vid_lut[vid_uint8], aud (B, S, 1, 128, 66), reference outputs."""
    return _data(ref)


@pytest.fixture
def sync_model(ref):
    return _cached_sync_model(ref)


@lru_cache(maxsize=1)
def _cached_sync_model(ref):
    return _model(ref, "sync", "state_dict.npz")


def test_every_stage_matches_reference(sync_model, data):
    vid, aud, ref = data
    m = sync_model
    b, s = vid.shape[:2]
    with torch.no_grad():
        aud_n, vid_n = aud.flatten(0, 1), vid.flatten(0, 1)
        afeat, vfeat = m.encode_audio(aud_n), m.encode_video(vid_n)
        got = {
            "ast_last_hidden_state": m.afeat_extractor.hidden_state(aud_n),
            "afeat": afeat.reshape(b, s, 6, -1),
            "mformer_tokens_normed": m.vfeat_extractor.tokens(vid_n),
            "vfeat": vfeat.reshape(b, s, 8, -1),
            "aproj": m.aproj(afeat).reshape(b, s, 6, -1),
            "vproj": m.vproj(vfeat).reshape(b, s, 8, -1),
            "transformer_ln_f": m.head_tokens(vfeat.reshape(b, s * 8, -1), afeat.reshape(b, s * 6, -1)),
            "head": m.head(vfeat.reshape(b, s * 8, -1), afeat.reshape(b, s * 6, -1)),
            "logits": m(vid, aud),
        }
    for key, value in got.items():
        want = ref["logits" if key == "head" else key]
        assert value.dtype == torch.float32
        np.testing.assert_allclose(value.numpy(), want, **TOL, err_msg=key)


def test_synchronizability_logits_match_reference(ref, data):
    vid, aud, out = data
    model = _model(ref, "synchronizability", "state_dict_synchronizability.npz")
    with torch.no_grad():
        logits = model(vid, aud)
    assert logits.shape == (2, 2)
    np.testing.assert_allclose(logits.numpy(), out["sync_logits"], **TOL)


def test_segment_order_matters(sync_model, data):
    """Swapping the two audio segments moves the logits far beyond the tolerance."""
    vid, aud, out = data
    with torch.no_grad():
        swapped = sync_model(vid, aud.flip(1))
    assert np.abs(swapped.numpy() - out["logits"]).max() > 1e-2


def test_load_weights_names_missing_and_misshaped_keys(ref):
    sd = dict(np.load(ref / "state_dict.npz"))
    del sd["vproj.bias"]
    sd["aproj.weight"] = sd["aproj.weight"][:, :-1]
    sd["extra.weight"] = np.zeros(3, np.float32)
    model = build_model(ModelConfig.from_reference_json(ref / "config.json"))
    with pytest.raises(CheckpointError) as err:
        load_weights(model, sd)
    msg = str(err.value)
    assert "missing keys (1): vproj.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "aproj.weight (32, 47) (expected (32, 48))" in msg


def test_longer_pos_emb_is_trimmed_shorter_rejected(ref, data):
    vid, aud, out = data
    sd = dict(np.load(ref / "state_dict.npz"))
    table = sd[POS_EMB_KEY]
    cfg = ModelConfig.from_reference_json(ref / "config.json")
    longer = dict(sd, **{POS_EMB_KEY: np.concatenate([table, np.ones_like(table[:, :4])], 1)})
    model = load_weights(build_model(cfg), longer)
    np.testing.assert_array_equal(model.state_dict()[POS_EMB_KEY].numpy(), table)
    with torch.no_grad():
        np.testing.assert_allclose(model(vid, aud).numpy(), out["logits"], **TOL)
    with pytest.raises(CheckpointError, match="has 29 rows, the model needs 30"):
        load_weights(build_model(cfg), dict(sd, **{POS_EMB_KEY: table[:, :-1]}))


def test_build_model_by_name_and_config():
    tiny = build_model("tiny", device="meta")
    assert tiny.config == ModelConfig.named("tiny")
    assert tiny.transformer.pos_emb_cfg.pos_emb.shape == (1, 198, 32)
    sync = build_model(ModelConfig.named("tiny").with_variant("synchronizability"), device="meta")
    assert sync.transformer.sync_head.out_features == 2 and not hasattr(sync.transformer, "off_head")
    with pytest.raises(ValueError, match="unknown model config"):
        build_model("large")


def test_state_dict_has_official_names_and_loads_back():
    """state_dict(): the official names, order and shapes (q, k, v are rows of the module's qkv);
    load_state_dict takes them back into another model."""
    from sync_sdk.weights.checkpoint import expected_shapes
    config = ModelConfig.named("tiny")
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    sd = model.state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == list(expected_shapes(config).items())
    h, a = config.h_dim, config.a_dim
    assert torch.equal(sd["transformer.blocks.0.attn.key.weight"], model.transformer.blocks[0].attn.qkv.weight[h:2 * h])
    assert torch.equal(sd["afeat_extractor.ast.encoder.layer.1.attention.attention.value.bias"],
                       model.afeat_extractor.blocks[1].attn.qkv.bias[2 * a:])
    other = build_model(config)
    other.load_state_dict(sd)
    assert all(torch.equal(x, y) for x, y in zip(model.parameters(), other.parameters()))
    # keep_vars=True (torch.jit.trace, the TorchScript ONNX exporter): the Parameters, by module name
    assert list(model.state_dict(keep_vars=True)) == [n for n, _ in model.named_parameters()]
