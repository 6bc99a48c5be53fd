"""Hostile checkpoints: files that declare more data than they hold, or more than the byte cap, are
refused with a CheckpointError before anything of that size is allocated (peak traced memory stays
small); honest files still load; the cap can be raised by keyword or environment variable."""
import io
import json
import pickle
import pickletools
import time
import tracemalloc
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest

from sync_sdk.errors import CheckpointError, UnsafeCheckpointError
from sync_sdk.weights.checkpoint import load_checkpoint
from sync_sdk.weights.limits import DEFAULT_MAX_BYTES, MAX_BYTES_ENV, MAX_TENSORS, resolve_max_bytes
from sync_sdk.weights.torch_zip import MAX_PICKLE_DEPTH, TorchZip

BUNDLED = Path(__file__).resolve().parents[1] / "sync_sdk" / "models" / "synthetic-tiny" / "model.safetensors"
PEAK_LIMIT = 50 << 20  # bytes of traced memory a refusal may use
CAP_HINT = f"max_checkpoint_bytes=N.*--max-checkpoint-bytes.*{MAX_BYTES_ENV}=N"


def _refused(path, match, error=CheckpointError, **kw):
    """load_checkpoint(path) raises `error` matching `match`, fast and without allocating much."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match):
            load_checkpoint(path, **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"peak traced memory {peak} bytes"
    assert time.perf_counter() - start < 30.0  # generous: the test machine is shared


# --- safetensors ---------------------------------------------------------------------------------
def _safetensors(path, header, data=b"", length=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)
    return path


def _entry(shape, offsets, dtype="F32"):
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


@pytest.mark.parametrize("header,match", [
    ({"w": _entry([2 ** 38], [0, 2 ** 40])}, "'w'.*1,099,511,627,776 bytes.*do not fit"),  # 1 TiB, 16 B held
    ({"w": _entry([2 ** 40, 2 ** 40], [0, 16])}, "'w'.*do not fit"),
    ({"w": _entry([-1, 4], [0, 16])}, "'w' declares an invalid shape"),
    ({"w": _entry([4], [8, 24])}, "'w'.*offsets \\[8, 24\\].*16 bytes of data"),  # past the end
    ({"w": _entry([4], [0, 16], dtype="F128")}, "'w' has no known dtype"),
    ({"w": _entry([1] * 33, [0, 4])}, "invalid shape"),
    ({"w": _entry([True, 4], [0, 16])}, "invalid shape"),
], ids=["1TB", "2^40x2^40", "negative-dim", "offsets-past-end", "dtype", "too-many-dims", "bool-dim"])
def test_safetensors_declaring_more_than_the_file_holds(tmp_path, header, match):
    _refused(_safetensors(tmp_path / "bad.safetensors", header, data=bytes(16)), match)


def test_safetensors_header_length_beyond_the_file(tmp_path):
    path = _safetensors(tmp_path / "bad.safetensors", {"w": _entry([4], [0, 16])}, bytes(16), length=2 ** 62)
    _refused(path, "header declares 4,611,686,018,427,387,904 bytes but the file holds")


def test_safetensors_with_too_many_tensors_or_deep_json(tmp_path):
    many = {f"t{i}": _entry([0], [0, 0]) for i in range(MAX_TENSORS + 1)}
    _refused(_safetensors(tmp_path / "many.safetensors", many), f"more than {MAX_TENSORS:,} tensors")
    deep = b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _refused(_safetensors(tmp_path / "deep.safetensors", deep), "not valid JSON")


def test_bundled_model_loads_and_a_lower_cap_refuses_it(monkeypatch):
    path = BUNDLED
    assert load_checkpoint(path).file_format == "safetensors"
    _refused(path, f"tensors declare 1,9\\d\\d,\\d{{3}} bytes, over the 1,000-byte limit.*{CAP_HINT}",
             max_checkpoint_bytes=1000)
    monkeypatch.setenv(MAX_BYTES_ENV, "1000")
    _refused(path, "over the 1,000-byte limit")
    assert load_checkpoint(path, max_checkpoint_bytes=10 << 20).file_format == "safetensors"  # keyword wins


def test_the_cap_resolves_from_keyword_then_environment(monkeypatch):
    monkeypatch.delenv(MAX_BYTES_ENV, raising=False)
    assert resolve_max_bytes() == DEFAULT_MAX_BYTES == 4 << 30
    monkeypatch.setenv(MAX_BYTES_ENV, "8_000_000_000")
    assert resolve_max_bytes() == 8_000_000_000 and resolve_max_bytes(123) == 123
    for bad in (0, -5, 2.5, True, "lots"):
        with pytest.raises(CheckpointError, match="max_checkpoint_bytes must be a positive whole number"):
            resolve_max_bytes(bad)
    monkeypatch.setenv(MAX_BYTES_ENV, "4GB")
    with pytest.raises(CheckpointError, match=f"\\${MAX_BYTES_ENV} must be"):
        resolve_max_bytes()


# --- torch zip archives, written opcode by opcode --------------------------------------------------
def _p(obj) -> bytes:
    """Protocol-2 opcodes of a plain value (without PROTO, STOP and memo entries)."""
    return pickletools.optimize(pickle.dumps(obj, protocol=2))[2:-1]


def _tensor(name, numel, shape, stride, offset=0, key="0") -> bytes:
    """`name`: torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, ()) as torch pickles it."""
    storage = b"((" + _p("storage") + b"ctorch\nFloatStorage\n" + _p(key) + _p("cpu") + _p(numel) + b"tQ"
    return _p(name) + b"ctorch._utils\n_rebuild_tensor_v2\n" + storage + \
        _p(offset) + _p(tuple(shape)) + _p(tuple(stride)) + b"\x89)tR"


def _torch_zip(path, *tensors, pkl=None, records=None):
    """A torch zip archive: data.pkl = {name: tensor, ...} (or `pkl`), records data/<key>."""
    records = {"0": np.arange(12, dtype="<f4").tobytes()} if records is None else records
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl or b"\x80\x02}(" + b"".join(tensors) + b"u.")
        zf.writestr("archive/byteorder", "little")
        for key, raw in records.items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def test_the_handmade_archive_reads_as_torch_writes_it(tmp_path):
    """Control for the hostile archives below: the same writer with honest sizes gives the tensors."""
    path = _torch_zip(tmp_path / "ok.pt", _tensor("w", 12, (3, 4), (4, 1)), _tensor("t", 12, (4, 3), (1, 4)),
                      _tensor("b", 12, (2, 4), (0, 1), offset=8))
    with zipfile.ZipFile(path) as zf:
        tz = TorchZip(path, zf, "archive/data.pkl", DEFAULT_MAX_BYTES)
        out = tz.read_tensors(tz.load())
    flat = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(out["w"], flat.reshape(3, 4))
    np.testing.assert_array_equal(out["t"], flat.reshape(3, 4).T)
    np.testing.assert_array_equal(out["b"], np.broadcast_to(flat[8:], (2, 4)))


@pytest.mark.parametrize("tensor,match", [
    (_tensor("w", 10 ** 12, (10 ** 12,), (1,)), "storage 0 declares 1,000,000,000,000 elements.*holds 48 bytes"),
    (_tensor("w", 12, (2 ** 16, 2 ** 16), (0, 0)), f"state dict declares 17,179,869,184 bytes.*{CAP_HINT}"),
    (_tensor("w", 12, (2 ** 40, 2 ** 40), (2 ** 40, 1)), "'w'.*lies outside its storage of 12 elements"),
    (_tensor("w", 12, (-1, 4), (4, 1)), "'w' declares an invalid shape"),
    (_tensor("w", 12, (4,), (1,), offset=10 ** 6), "'w'.*offset 1000000.*lies outside"),
    (_tensor("w", 12, (4,), (-1,), offset=11), "'w' has shape.*stride"),
    (_tensor("w", 12, (4,), (1,), key="7"), "storage record archive/data/7 is missing"),
], ids=["storage-1e12", "broadcast-16GiB", "2^40x2^40", "negative-dim", "offset-past-end", "negative-stride",
        "missing-record"])
def test_torch_zip_declaring_more_than_it_holds(tmp_path, tensor, match):
    _refused(_torch_zip(tmp_path / "bad.pt", tensor), match)


@pytest.mark.parametrize("pkl,match", [
    (b"\x80\x02N" + b"\x85" * 100_000 + b".", f"nests containers more than {MAX_PICKLE_DEPTH} deep"),
    (b"\x80\x02]" + b"(]" * 100_000 + b"e" * 100_000 + b".", "nests containers"),
    (b"\x80\x02Nr" + (2 ** 32 - 1).to_bytes(4, "little") + b".", "memo entry 4,294,967,295 after 2 opcodes"),
    (b"\x80\x04\x8e" + (2 ** 40).to_bytes(8, "little") + b"x" * 10 + b".", "malformed pickle.*bytes8"),
    (b"\x80\x02cbuiltins\nbytearray\n" + _p(10 ** 12) + b"\x85R.", r"refused bytearray\(1000000000000\)"),
    (b"\x80\x02cbuiltins\nbytes\n" + _p(10 ** 12) + b"\x85R.", r"refused bytes\(1000000000000\)"),
], ids=["nested-tuples", "nested-lists", "memo-index", "bytes8-length", "bytearray-size", "bytes-size"])
def test_hostile_pickles(tmp_path, pkl, match):
    _refused(_torch_zip(tmp_path / "bad.pt", pkl=pkl), match)


def test_absurd_number_of_tensors(tmp_path):
    """MAX_TENSORS + 1 views of one storage; the rebuild function, storage, shape and stride come from
    the memo (BINGET 0-3), as a pickler writes repeated objects."""
    head = (b"ctorch._utils\n_rebuild_tensor_v2\nq\x00((" + _p("storage") + b"ctorch\nFloatStorage\n" + _p("0")
            + _p("cpu") + _p(12) + b"tQq\x01K\x00K\x04\x85q\x02K\x01\x85q\x03\x89)tR")
    view = b"h\x00(h\x01K\x00h\x02h\x03\x89)tR"
    body = _p("t0") + head + b"".join(_p(f"t{i}") + view for i in range(1, MAX_TENSORS + 1))
    _refused(_torch_zip(tmp_path / "many.pt", pkl=b"\x80\x02}(" + body + b"u."), f"more than {MAX_TENSORS:,} tensors")


def test_official_layout_under_a_lower_cap(tmp_path, tiny_reference_dir, monkeypatch):
    torch = pytest.importorskip("torch")
    with np.load(tiny_reference_dir / "state_dict.npz") as z:
        sd = OrderedDict((k, torch.from_numpy(z[k])) for k in z.files)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": sd, "epoch": 3}, path)
    nbytes = sum(v.numel() * 4 for v in sd.values())
    _refused(path, f"state dict declares {nbytes:,} bytes, over the {nbytes - 1:,}-byte limit.*{CAP_HINT}",
             max_checkpoint_bytes=nbytes - 1)
    monkeypatch.setenv(MAX_BYTES_ENV, str(nbytes))  # exactly enough
    with pytest.raises(CheckpointError, match="head counts"):  # read in full; tiny widths need a config
        load_checkpoint(path)


# --- npz and the torch.load path --------------------------------------------------------------------
def test_npz_declaring_a_huge_array(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12,)})
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", buf.getvalue() + bytes(16))
    _refused(path, "member w.npy declares 4,000,000,000,000 bytes of data but holds 16")


def test_npz_over_the_cap(tmp_path):
    path = tmp_path / "sd.npz"
    np.savez(path, w=np.zeros(1000, np.float32))
    _refused(path, f"arrays declare 4,000 bytes, over the 3,999-byte limit.*{CAP_HINT}", max_checkpoint_bytes=3999)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_unsafe_files_are_sized_before_torch_load(tmp_path, monkeypatch, legacy):
    torch = pytest.importorskip("torch")
    path = tmp_path / "unsafe.pt"
    torch.save({"model": Counter(a=1), "w": torch.zeros(1000)}, path, _use_new_zipfile_serialization=not legacy)
    _refused(path, "allow_unsafe=True \\(CLI: --allow-unsafe\\)", error=UnsafeCheckpointError)

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load ran before the size check")

    monkeypatch.setattr(torch, "load", no_torch_load)
    _refused(path, f"(records|file) holds? .*over the 1,000-byte limit.*{CAP_HINT}", allow_unsafe=True,
             max_checkpoint_bytes=1000)
