"""Full-size models have exactly the official state-dict names, order and shapes (built on meta)."""
import json

import pytest

torch = pytest.importorskip("torch")

from sync_sdk.model import build_model  # noqa: E402


@pytest.mark.parametrize("variant", ["sync", "synchronizability"])
def test_state_dict_equals_official_manifest(reference_root, variant):
    manifest = json.loads((reference_root / "state_dict_manifest.json").read_text())[variant]
    model = build_model(variant, device="meta")
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    want = [(e["name"], e["shape"], e["dtype"]) for e in manifest["keys"]]
    assert got == want
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["num_elements_total"]
    assert not list(model.buffers())


def test_unused_2d_patch_embed_is_never_used():
    """Zeroing or NaN-ing the unused 2-D patch embedding leaves the video features unchanged."""
    torch.manual_seed(0)
    model = build_model("tiny")
    vid = torch.randn(1, 16, 3, 224, 224)
    with torch.no_grad():
        before = model.encode_video(vid)
        model.vfeat_extractor.patch_embed.proj.weight.fill_(float("nan"))
        after = model.encode_video(vid)
    assert torch.equal(before, after)
