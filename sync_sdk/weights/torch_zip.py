"""Read tensors from `torch.save` zip files without torch and without running pickled code.

A torch zip archive holds `<name>/data.pkl` (the pickled object, tensors replaced by persistent ids
('storage', <torch.XStorage>, key, location, numel)) and one raw little-endian buffer per storage in
`<name>/data/<key>`. `data.pkl` is read by a restricted unpickler: only the tensor rebuild functions,
the storage type names and plain containers resolve to real objects; every other global becomes an
inert `Placeholder` that records its name and never calls anything (so e.g. the OmegaConf `args` of
an official checkpoint loads as a harmless stub). Tensors come out as lazy `TensorRef`s that
`read_tensors` turns into NumPy arrays (float16 / bfloat16 / float64 storages become float32).

Nothing is allocated from what the file declares before it is checked: `data.pkl` is scanned opcode by
opcode first (size, opcode count, nesting depth, memo indices: the C unpickler preallocates what a
length prefix or memo index says), every storage must fit its record, and every tensor its storage;
the tensor data read is held under the caller's byte cap (limits.py).
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import reprlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sync_sdk.errors import CheckpointError
from sync_sdk.weights.limits import check_count, check_total, shape_bytes

# torch storage class name -> NumPy dtype code (bfloat16 is read as its raw 16 bits)
STORAGE_DTYPES = {
    "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2", "DoubleStorage": "f8",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
MAX_PICKLE_BYTES = 32 << 20  # data.pkl; an official one is well under 1 MB
MAX_PICKLE_OPS = 2_000_000
MAX_PICKLE_DEPTH = 256  # containers inside containers; official checkpoints nest a few tens deep
# opcodes that fill the container below their arguments instead of building a new object
_IN_PLACE = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})


def _stack_effect(op: pickletools.OpcodeInfo) -> tuple[int, bool, int]:
    """(objects popped below a mark or from the top, whether it pops to the last mark, objects pushed)."""
    before = op.stack_before
    marked = pickletools.markobject in before
    return (before.index(pickletools.markobject) if marked else len(before)), marked, len(op.stack_after)


_EFFECTS = {op.name: _stack_effect(op) for op in pickletools.opcodes}


def _buffer(t: type):
    """bytes / bytearray that refuse a size argument (`bytes(10**12)` would allocate it)."""
    def make(*args):
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"refused {t.__name__}({args[0]}) (a buffer built from a size)")
        return t(*args)
    return make


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("builtins", t.__name__): t for t in (dict, list, tuple, set, frozenset, int, float, complex, str, bool)},
    **{("builtins", t.__name__): _buffer(t) for t in (bytes, bytearray)},
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

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype).itemsize


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


_REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")
_REBUILD_PARAMETER = {("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state")}


def scan_pickle(data: bytes, where: object) -> None:
    """Refuse a pickle with more than MAX_PICKLE_OPS opcodes, containers nested deeper than
    MAX_PICKLE_DEPTH (hashing a deep tuple overflows the C stack), a memo index beyond its opcode
    count (the C unpickler sizes its memo by it) or a length prefix past its end."""
    stack: list[int] = []  # nesting depth of each object on the unpickler's stack
    marks: list[int] = []
    memo: dict[int, int] = {}
    try:
        for n, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(data))):
            if n >= MAX_PICKLE_OPS:
                raise CheckpointError(f"{where}: the pickle has more than {MAX_PICKLE_OPS:,} opcodes")
            name = op.name
            below, marked, pushed = _EFFECTS[name]
            if not (below or marked):  # constants, empty containers, GET, MARK, PUT, FRAME
                if name == "MARK":
                    marks.append(len(stack))
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    stack.append(memo.get(arg, 0))
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    if arg > n:
                        raise CheckpointError(f"{where}: the pickle stores memo entry {arg:,} after {n:,} opcodes")
                    memo[arg] = stack[-1]
                else:
                    stack.extend([1] * pushed)
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "POP" and marks and marks[-1] == len(stack):
                marks.pop()
            else:
                _apply(name, below, marked, pushed, stack, marks)
                if stack and stack[-1] > MAX_PICKLE_DEPTH:
                    raise CheckpointError(f"{where}: the pickle nests containers more than {MAX_PICKLE_DEPTH} deep")
    except (ValueError, IndexError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{where}: malformed pickle in the torch archive ({e})") from e


def _apply(name: str, below: int, marked: bool, pushed: int, stack: list[int], marks: list[int]) -> None:
    """One opcode on a stack of nesting depths: a new object is one deeper than what it takes."""
    inner: list[int] = []
    if marked:
        start = marks.pop()
        inner = stack[start:]
        del stack[start:]
    if len(stack) < below:
        raise IndexError("stack underflow")
    popped = stack[len(stack) - below:]
    del stack[len(stack) - below:]
    if name in _IN_PLACE:
        depth = max(popped[0], 1 + max(popped[1:] + inner, default=0))
    else:
        depth = 1 + max(popped + inner, default=0)
    stack.extend([depth] * pushed)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; passes each storage through `check_storage` and refuses
    more than MAX_TENSORS tensors."""

    def __init__(self, file, where: object, check_storage: Callable[[StorageRef], StorageRef]) -> None:
        super().__init__(file)
        self._where = where
        self._check_storage = check_storage
        self._tensors = 0

    def _rebuild_tensor(self, *args) -> object:
        self._tensors += 1
        check_count(self._where, self._tensors)
        return _rebuild_tensor(*args)

    def find_class(self, module: str, name: str):
        if (module, name) == _REBUILD_TENSOR:
            return self._rebuild_tensor
        if (module, name) in _REBUILD_PARAMETER:
            return _rebuild_parameter
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        return _placeholder_class(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unexpected persistent id {reprlib.repr(pid)}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            return _placeholder_class(getattr(storage_type, "qualname", reprlib.repr(storage_type)))()
        key = key.decode() if isinstance(key, bytes) else str(key)
        return self._check_storage(StorageRef(key, STORAGE_DTYPES[storage_type.name], int(numel)))


class TorchZip:
    """A torch zip checkpoint opened by the caller: `load()` the restricted pickle, then `read_tensors`.

    max_bytes: cap on the tensor data `read_tensors` allocates (bytes; limits.resolve_max_bytes).
    """

    def __init__(self, path: Path, zf: zipfile.ZipFile, pkl_name: str, max_bytes: int) -> None:
        self.path = path
        self._zf = zf
        self._max_bytes = max_bytes
        self._prefix = pkl_name[: -len("data.pkl")]
        order_name = self._prefix + "byteorder"
        if order_name in zf.namelist():
            with zf.open(order_name) as f:
                order = f.read(16).decode(errors="replace").strip()
        else:
            order = "little"
        self._endian = ">" if order == "big" else "<"

    def load(self):
        """The unpickled object; tensors are `TensorRef`, unknown objects `Placeholder`s."""
        info = self._zf.getinfo(self._prefix + "data.pkl")
        if info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{self.path}: {info.filename} is {info.file_size:,} bytes, over the "
                                  f"{MAX_PICKLE_BYTES:,}-byte limit for a checkpoint's pickle")
        try:
            with self._zf.open(info) as f:
                data = f.read(MAX_PICKLE_BYTES)
            scan_pickle(data, self.path)
            return _RestrictedUnpickler(io.BytesIO(data), self.path, self._check_storage).load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                RecursionError, OSError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{self.path}: cannot read the pickle of the torch archive ({e})") from e

    def _record(self, key: str) -> zipfile.ZipInfo:
        name = f"{self._prefix}data/{key}"
        try:
            return self._zf.getinfo(name)
        except KeyError as e:
            raise CheckpointError(f"{self.path}: storage record {name} is missing") from e

    def _check_storage(self, s: StorageRef) -> StorageRef:
        """A storage the pickle declares must fit the bytes its record holds."""
        info = self._record(s.key)
        if s.numel < 0 or s.nbytes > info.file_size:
            raise CheckpointError(f"{self.path}: storage {s.key} declares {s.numel:,} elements ({s.nbytes:,} "
                                  f"bytes) but its record {info.filename} holds {info.file_size:,} bytes")
        return s

    def read_tensors(self, refs: dict[str, TensorRef]) -> dict[str, np.ndarray]:
        """Arrays for `refs` (float16/bfloat16/float64 -> float32); storages shared by views are read once.

        Every tensor is checked against its storage, and the storages read and the arrays made against
        the byte cap, before any data is read.
        """
        check_count(self.path, len(refs))
        out_bytes = (self._check_view(name, ref) for name, ref in refs.items())
        check_total(self.path, "its state dict declares", out_bytes, self._max_bytes)
        storages = {r.storage.key: r.storage for r in refs.values()}
        check_total(self.path, "the storages of its state dict hold",
                    (s.nbytes for s in storages.values()), self._max_bytes)
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
            out[name] = self._view(ref, flat)
        return out

    def _check_view(self, name: str, ref: TensorRef) -> int:
        """Bytes of the array made for `ref` (float32 for floating storages), after checking that its
        shape, stride and offset stay inside its storage."""
        shape, stride = ref.shape, ref.stride
        itemsize = 4 if ref.storage.dtype in ("f2", "u2", "f8") else np.dtype(ref.storage.dtype).itemsize
        nbytes = shape_bytes(self.path, name, shape, itemsize)
        if len(stride) != len(shape) or min(stride, default=0) < 0 or ref.offset < 0:
            raise CheckpointError(f"{self.path}: tensor {name!r} has shape {reprlib.repr(shape)}, stride "
                                  f"{reprlib.repr(stride)} and offset {ref.offset}")
        last = ref.offset + sum((n - 1) * st for n, st in zip(shape, stride))
        if nbytes and last >= ref.storage.numel:
            raise CheckpointError(f"{self.path}: tensor {name!r} (shape {shape}, offset {ref.offset}, stride "
                                  f"{stride}) lies outside its storage of {ref.storage.numel:,} elements")
        return nbytes

    def _read_storage(self, s: StorageRef) -> np.ndarray:
        info = self._record(s.key)
        dtype = np.dtype(self._endian + s.dtype) if s.dtype != "?" else np.dtype("?")
        try:
            with self._zf.open(info) as f:
                raw = f.read(s.nbytes)
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{self.path}: storage record {info.filename} is missing or corrupt ({e})") from e
        if len(raw) < s.nbytes:
            raise CheckpointError(f"{self.path}: storage record {info.filename} holds {len(raw)} bytes, "
                                  f"expected {s.nbytes}")
        return np.frombuffer(raw, dtype=dtype, count=s.numel)

    @staticmethod
    def _view(ref: TensorRef, flat: np.ndarray) -> np.ndarray:
        """The tensor as a C-ordered array in native byte order (a size-1 dimension's stride is unused)."""
        if 0 in ref.shape:
            arr = np.zeros(ref.shape, flat.dtype)
        else:
            strides = tuple(st * flat.itemsize if n > 1 else 0 for n, st in zip(ref.shape, ref.stride))
            arr = np.lib.stride_tricks.as_strided(flat[ref.offset:], ref.shape, strides, writeable=False)
        if ref.storage.dtype == "u2":  # bfloat16: the high half of a float32
            return (arr.astype(np.uint32, order="C") << 16).view(np.float32)
        if arr.dtype.kind == "f":
            return np.array(arr, dtype=np.float32, order="C")
        return np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")


def pickle_record(names: list[str]) -> str | None:
    """The `data.pkl` record of a torch zip archive given its member names, or None."""
    pkl = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    return pkl[0] if len(pkl) == 1 else None
