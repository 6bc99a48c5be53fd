"""Read tensors from `torch.save` zip files without torch and without running pickled code.

A torch zip archive holds `<name>/data.pkl` (the pickled object, tensors replaced by persistent ids
('storage', <torch.XStorage>, key, location, numel)) and one raw little-endian buffer per storage in
`<name>/data/<key>`. `data.pkl` is read by a restricted unpickler: only the tensor rebuild functions,
the storage type names and plain containers resolve to real objects; every other global becomes an
inert `Placeholder` that records its name and never calls anything (so e.g. the OmegaConf `args` of
an official checkpoint loads as a harmless stub). Tensors come out as lazy `TensorRef`s that
`read_tensors` turns into NumPy arrays (float16 / bfloat16 / float64 storages become float32).
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sync_sdk.errors import CheckpointError

# torch storage class name -> NumPy dtype code (bfloat16 is read as its raw 16 bits)
STORAGE_DTYPES = {
    "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2", "DoubleStorage": "f8",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("builtins", t.__name__): t for t in (dict, list, tuple, set, frozenset, int, float, complex,
                                             str, bytes, bytearray, bool)},
}


class Placeholder:
    """Inert stand-in for any pickled object whose class/function is not on the allow-list.

    Constructing, calling, filling or `__setstate__`-ing it only records nothing and runs no code.
    """

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs) -> "Placeholder":
        return _placeholder_class(f"{self.qualname}(...)")()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass

    def __repr__(self) -> str:
        return f"<unloaded pickled object {self.qualname}>"


def _placeholder_class(qualname: str) -> type:
    return type("Placeholder", (Placeholder,), {"qualname": qualname})


@dataclass(frozen=True)
class StorageRef:
    """One storage record `data/<key>`: `numel` elements of NumPy dtype code `dtype`."""

    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor view into a storage: element offset, shape and element strides."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class _StorageType:
    name: str


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for torch._utils._rebuild_tensor_v2 (requires_grad, hooks, metadata are dropped)."""
    if not isinstance(storage, StorageRef):
        return _placeholder_class(f"tensor on {getattr(storage, 'qualname', type(storage).__name__)}")()
    return TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter(_with_state): a parameter is its data."""
    return data


_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _REBUILDERS:
            return _REBUILDERS[module, name]
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        return _placeholder_class(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            return _placeholder_class(getattr(storage_type, "qualname", repr(storage_type)))()
        key = key.decode() if isinstance(key, bytes) else str(key)
        return StorageRef(key, STORAGE_DTYPES[storage_type.name], int(numel))


class TorchZip:
    """A torch zip checkpoint opened by the caller: `load()` the restricted pickle, then `read_tensors`."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, pkl_name: str) -> None:
        self.path = path
        self._zf = zf
        self._prefix = pkl_name[: -len("data.pkl")]
        order_name = self._prefix + "byteorder"
        order = zf.read(order_name).decode().strip() if order_name in zf.namelist() else "little"
        self._endian = ">" if order == "big" else "<"

    def load(self):
        """The unpickled object; tensors are `TensorRef`, unknown objects `Placeholder`s."""
        try:
            with self._zf.open(self._prefix + "data.pkl") as f:
                return _RestrictedUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{self.path}: cannot read the pickle of the torch archive ({e})") from e

    def read_tensors(self, refs: dict[str, TensorRef]) -> dict[str, np.ndarray]:
        """Arrays for `refs` (float16/bfloat16/float64 -> float32); storages shared by views are read once."""
        uses = collections.Counter(r.storage.key for r in refs.values())
        cache: dict[str, np.ndarray] = {}
        out = {}
        for name, ref in refs.items():
            key = ref.storage.key
            flat = cache[key] if key in cache else self._read_storage(ref.storage)
            uses[key] -= 1
            if uses[key]:
                cache[key] = flat
            else:
                cache.pop(key, None)
            out[name] = self._view(name, ref, flat)
        return out

    def _read_storage(self, s: StorageRef) -> np.ndarray:
        name = f"{self._prefix}data/{s.key}"
        try:
            raw = self._zf.read(name)
        except (KeyError, zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{self.path}: storage record {name} is missing or corrupt ({e})") from e
        dtype = np.dtype(self._endian + s.dtype) if s.dtype != "?" else np.dtype("?")
        if len(raw) < s.numel * dtype.itemsize:
            raise CheckpointError(f"{self.path}: storage record {name} holds {len(raw)} bytes, "
                                  f"expected {s.numel * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype, count=s.numel)

    def _view(self, name: str, ref: TensorRef, flat: np.ndarray) -> np.ndarray:
        if len(ref.shape) != len(ref.stride):
            raise CheckpointError(f"{self.path}: tensor {name!r} has shape {ref.shape} but stride {ref.stride}")
        if 0 in ref.shape:
            arr = np.zeros(ref.shape, flat.dtype)
        else:
            last = ref.offset + sum((n - 1) * st for n, st in zip(ref.shape, ref.stride))
            if ref.offset < 0 or min(ref.shape + ref.stride) < 0 or last >= flat.size:
                raise CheckpointError(f"{self.path}: tensor {name!r} (shape {ref.shape}, offset {ref.offset}, "
                                      f"stride {ref.stride}) lies outside its storage of {flat.size} elements")
            arr = np.lib.stride_tricks.as_strided(
                flat[ref.offset:], ref.shape, tuple(st * flat.itemsize for st in ref.stride), writeable=False)
        if ref.storage.dtype == "u2":  # bfloat16: the high half of a float32
            return (arr.astype(np.uint32, order="C") << 16).view(np.float32)
        if arr.dtype.kind == "f":
            return np.array(arr, dtype=np.float32, order="C")
        return np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")


def pickle_record(names: list[str]) -> str | None:
    """The `data.pkl` record of a torch zip archive given its member names, or None."""
    pkl = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    return pkl[0] if len(pkl) == 1 else None
