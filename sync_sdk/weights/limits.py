"""Size limits for checkpoint files, checked against what a file declares before anything is allocated.

Every reader (torch zip, safetensors, npz, and the file handed to torch.load with allow_unsafe=True)
checks that each tensor fits inside the bytes the file really holds and that the tensor data it would
allocate stays under a cap: the `max_checkpoint_bytes` keyword, else
$SYNC_SDK_MAX_CHECKPOINT_BYTES, else 4 GiB (an official .pt is about 2.9 GB with its optimizer state;
its state dict is 0.95 GB). Structural limits (tensor count, dimensions, header size) are fixed.
"""
from __future__ import annotations

import json
import math
import os
import reprlib
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sync_sdk.errors import CheckpointError

MAX_BYTES_ENV = "SYNC_SDK_MAX_CHECKPOINT_BYTES"
DEFAULT_MAX_BYTES = 4 << 30
MAX_TENSORS = 20_000  # the official state dict has 513 tensors (with its optimizer state about 1,500)
MAX_NDIM = 32
MAX_HEADER_BYTES = 16 << 20  # a safetensors JSON header (official size: about 60 KB)
# safetensors dtype -> bytes per element
SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
                        "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


def resolve_max_bytes(value: int | str | None = None) -> int:
    """The cap in bytes: `value` (the max_checkpoint_bytes keyword), else $SYNC_SDK_MAX_CHECKPOINT_BYTES,
    else DEFAULT_MAX_BYTES (4 GiB)."""
    where = "max_checkpoint_bytes"
    if value is None and os.environ.get(MAX_BYTES_ENV):
        where, value = f"${MAX_BYTES_ENV}", os.environ[MAX_BYTES_ENV]
    if value is None:
        return DEFAULT_MAX_BYTES
    try:
        cap = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else 0
    except ValueError:
        cap = 0
    if cap <= 0:
        raise CheckpointError(f"{where} must be a positive whole number of bytes, got {value!r}")
    return cap


def check_total(where: object, what: str, sizes: Iterable[int], cap: int) -> int:
    """Sum of `sizes` (bytes), refused past `cap` with a message saying how to raise it."""
    total = sum(sizes)
    if total <= cap:
        return total
    raise CheckpointError(
        f"{where}: {what} {total:,} bytes, over the {cap:,}-byte limit for checkpoints; if you trust the file, "
        f"raise the limit with max_checkpoint_bytes=N (CLI: --max-checkpoint-bytes N) or ${MAX_BYTES_ENV}=N")


def shape_bytes(where: object, name: str, shape: object, itemsize: int) -> int:
    """Bytes of a tensor of `shape` (a sequence of ints >= 0, at most MAX_NDIM) and `itemsize`.

    Python ints throughout: a product like 2**40 x 2**40 cannot overflow.
    """
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise CheckpointError(f"{where}: tensor {name!r} declares an invalid shape {_short(shape)} "
                              f"(expected at most {MAX_NDIM} dimensions of size >= 0)")
    return math.prod(shape) * itemsize


def check_count(where: object, n: int) -> None:
    if n > MAX_TENSORS:
        raise CheckpointError(f"{where}: declares more than {MAX_TENSORS:,} tensors; not a checkpoint this "
                              "SDK reads (the official one has 513)")


def check_safetensors(path: Path, cap: int) -> None:
    """Refuse a safetensors file whose header or tensors do not fit the file, or whose data passes `cap`.

    Layout: 8-byte little-endian header length n, n bytes of JSON {name: {dtype, shape, data_offsets:
    [begin, end]}, "__metadata__": {str: str}}, then the data; offsets are relative to the data.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= size - 8:
            raise CheckpointError(f"{path}: the safetensors header declares {n:,} bytes but the file holds "
                                  f"{size:,}: truncated or not a safetensors file")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: the safetensors header is {n:,} bytes, over the "
                                  f"{MAX_HEADER_BYTES:,}-byte limit")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({type(e).__name__})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    check_count(path, len(tensors))
    data_len = size - 8 - n
    check_total(path, "its tensors declare", (_safetensors_entry(path, k, v, data_len) for k, v in tensors.items()),
                cap)


def _safetensors_entry(path: Path, name: str, entry: object, data_len: int) -> int:
    """Bytes of one header entry, checked against its offsets and the data section (`data_len` bytes)."""
    if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_ITEMSIZE:
        raise CheckpointError(f"{path}: tensor {name!r} has no known dtype ({_short(entry)})")
    nbytes = shape_bytes(path, name, entry.get("shape"), SAFETENSORS_ITEMSIZE[entry["dtype"]])
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_len and offsets[1] - offsets[0] == nbytes):
        raise CheckpointError(f"{path}: tensor {name!r} ({nbytes:,} bytes) has data offsets {_short(offsets)} "
                              f"that do not fit its size or the {data_len:,} bytes of data in the file")
    return nbytes


def check_npz(path: Path, zf: zipfile.ZipFile, cap: int) -> None:
    """Refuse an .npz whose arrays (read from each .npy header) do not fit their records or pass `cap`."""
    infos = zf.infolist()
    check_count(path, len(infos))
    check_total(path, "its arrays declare", (_npy_bytes(path, zf, info) for info in infos), cap)


def _npy_bytes(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            header_len = f.tell()
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: member {info.filename} is not a valid .npy array ({e})") from e
    if dtype.hasobject:
        raise CheckpointError(f"{path}: member {info.filename} holds Python objects, not numbers")
    nbytes = shape_bytes(path, info.filename, shape, dtype.itemsize)
    if nbytes > info.file_size - header_len:
        raise CheckpointError(f"{path}: member {info.filename} declares {nbytes:,} bytes of data but holds "
                              f"{info.file_size - header_len:,}")
    return nbytes


def check_unsafe(path: Path, cap: int) -> None:
    """Before torch.load: everything it may allocate (every zip record, or the whole legacy file) <= cap."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
        check_count(path, len(infos))
        check_total(path, "its records hold", (i.file_size for i in infos), cap)
    else:
        check_total(path, "the file holds", [path.stat().st_size], cap)


def _short(value: object) -> str:
    """A bounded repr (reprlib: safe for deep or huge containers)."""
    return reprlib.repr(value)
