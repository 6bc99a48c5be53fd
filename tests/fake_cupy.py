"""A CPU stand-in for the part of CuPy that sync_sdk.inputs.gpu uses, for checking its host logic without a GPU.

`install(monkeypatch)` puts fake `cupy`, `cupy.cuda`, `cupy.cuda.cufft` and `cupyx` modules in
sys.modules. Device arrays are NumPy arrays (subclass `ndarray`); RawModule parses the extern "C"
kernel signatures of the real kernels/*.cu source, and each launch checks the argument count and
types against that signature (pointer dtypes, int32 / float32 scalars, grid and block shapes), then
runs a line-by-line NumPy translation of the kernel's index arithmetic (vectorised over the
grid-stride loop), with bounds checks on every read and write.
"""
from __future__ import annotations

import re
import sys
import types
from contextlib import contextmanager

import numpy as np

POINTER_DTYPES = {"float": (np.float32,), "long long": (np.int64,), "int": (np.int32,),
                  "unsigned char": (np.uint8,), "unsigned short": (np.uint16, np.float16),
                  "float2": (np.complex64,)}
SCALAR_TYPES = {"int": np.int32, "float": np.float32}


class ndarray(np.ndarray):
    """A 'device' array: NumPy memory, with CuPy's `set` and `get`; its type names the module "cupy"."""

    def get(self, stream=None) -> np.ndarray:
        return np.array(self)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray) or isinstance(arr, ndarray):
            raise TypeError("set() takes a host numpy.ndarray")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set: {arr.dtype}{arr.shape} into {self.dtype}{self.shape}")
        if not self.flags.c_contiguous:
            raise RuntimeError("set() into a non-contiguous array")
        np.copyto(np.asarray(self), arr)


def _dev(a) -> ndarray:
    return np.asarray(a).view(ndarray)


# ------------------------------------------------------------------------------------------ kernels
def parse_signatures(code: str) -> dict[str, list[tuple[str, str, bool]]]:
    """{kernel: [(name, base type, is_pointer), ...]} of every extern "C" __global__ function."""
    code = re.sub(r"//[^\n]*", "", code)
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    sigs = {}
    for name, params in re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\((.*?)\)', code, flags=re.S):
        out = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", " ").replace("const", " ").split())
            pointer = "*" in p
            p = p.replace("*", " ").split()
            out.append((p[-1], " ".join(p[:-1]), pointer))
        sigs[name] = out
    return sigs


def _flat(a: ndarray, dtype=None) -> np.ndarray:
    a = np.asarray(a)
    if not a.flags.c_contiguous:
        raise AssertionError("kernel argument is not C-contiguous")
    return a.reshape(-1) if dtype is None else a.reshape(-1).view(dtype)


def _read(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if idx.size and (idx.min() < 0 or idx.max() >= buf.size):
        raise AssertionError(f"out-of-bounds read: [{idx.min()}, {idx.max()}] of {buf.size}")
    return buf[idx]


def _write(buf: np.ndarray, idx: np.ndarray, values) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= buf.size):
        raise AssertionError(f"out-of-bounds write: [{idx.min()}, {idx.max()}] of {buf.size}")
    buf[idx] = values


def k_frame_segments(grid, block, shared, a):
    total = int(a["n_seg"]) * int(a["n_frames"]) * int(a["n_fft"])
    i = np.arange(total, dtype=np.int64)
    t = i % a["n_fft"]
    row = i // a["n_fft"]
    k = row % a["n_frames"]
    s = row // a["n_frames"]
    inside = (t >= a["win_lo"]) & (t < a["win_hi"])
    j = k * a["hop"] + t - a["n_fft"] // 2
    j = np.abs(j)
    j = np.where(j >= a["seg_len"], 2 * (a["seg_len"] - 1) - j, j)
    src = _read(_flat(a["starts"]), s[inside]) + j[inside]
    v = np.zeros(total, np.float32)
    v[inside] = _read(_flat(a["pcm"]), src) * _read(_flat(a["window"]), t[inside])
    _write(_flat(a["frames"]), i, v)


def k_mel_log_norm(grid, block, shared, a):
    n_out, n_seg = grid[0], grid[1]
    nf, nb, nm = int(a["n_frames"]), int(a["n_bins"]), int(a["n_mels"])
    assert block == (nm,) and n_out == a["n_out"] and shared >= nb * 4
    spec = _read(_flat(a["spec"]), np.arange(n_seg * nf * nb)).reshape(n_seg, nf, nb)
    power = (spec.real * spec.real + spec.imag * spec.imag).astype(np.float32)
    lo, ln, off, w = (_flat(a[k]) for k in ("band_lo", "band_len", "band_off", "band_w"))
    v = np.zeros((n_seg, nm, n_out), np.float32)
    for m in range(nm):
        acc = power[:, :, lo[m]:lo[m] + ln[m]] @ _read(w, off[m] + np.arange(ln[m]))
        kk = min(nf, n_out)
        v[:, m, :kk] = np.log(acc[:, :kk] + a["eps"])
    s, m, k = np.meshgrid(np.arange(n_seg), np.arange(nm), np.arange(n_out), indexing="ij")
    _write(_flat(a["out"]), ((s * nm + m) * n_out + k).reshape(-1), ((v - a["mean"]) / a["denom"]).reshape(-1))


def _out_view(a):
    out = np.asarray(a["out"])
    return _flat(out, np.uint16 if out.dtype == np.float16 else None)


def k_crop_lut(grid, block, shared, a):
    size, h, w = int(a["size"]), int(a["h"]), int(a["w"])
    assert size % 4 == 0
    quads = size // 4
    i = np.arange(int(a["n_out"]) * size * quads, dtype=np.int64)
    f, r = i // (size * quads), i % (size * quads)
    y, x = r // quads, (r % quads) * 4
    fi = _read(_flat(a["frame_index"]), f).astype(np.int64)
    base = ((fi * h + a["top"] + y) * w + a["left"] + x) * 3
    src, lut, out = _flat(a["src"]), _flat(a["lut"]), _out_view(a)
    plane = size * size
    for p in range(4):
        for c in range(3):
            _write(out, f * 3 * plane + c * plane + y * size + x + p, lut[_read(src, base + 3 * p + c)])


def k_resize_crop_lut(grid, block, shared, a):
    size, h, w = int(a["size"]), int(a["h"]), int(a["w"])
    plane = size * size
    i = np.arange(int(a["n_out"]) * plane, dtype=np.int64)
    f, r = i // plane, i % plane
    y, x = r // size, r % size
    fi = _read(_flat(a["frame_index"]), f).astype(np.int64)
    src, lut, out = _flat(a["src"]), _flat(a["lut"]), _out_view(a)
    y0, ny = _read(_flat(a["row_first"]), y), _read(_flat(a["row_count"]), y)
    x0, nx = _read(_flat(a["col_first"]), x), _read(_flat(a["col_count"]), x)
    rw, cw = _flat(a["row_w"]), _flat(a["col_w"])
    acc = np.zeros((i.size, 3), np.float32)
    for ia in range(int(a["row_taps"])):
        s = np.zeros((i.size, 3), np.float32)
        for ib in range(int(a["col_taps"])):
            on = ib < nx
            wb = np.where(on, _read(cw, x * a["col_taps"] + ib), 0).astype(np.float32)
            row = np.where(ia < ny, y0 + ia, 0)
            col = np.where(on, x0 + ib, 0)
            p = (fi * h * w + row * w + col) * 3
            for c in range(3):
                s[:, c] += wb * _read(src, p + c).astype(np.float32)
        wa = np.where(ia < ny, _read(rw, y * a["row_taps"] + ia), 0).astype(np.float32)
        acc += wa[:, None] * s
    u8 = np.clip(np.rint(acc), 0, 255).astype(np.int64)
    for c in range(3):
        _write(out, f * 3 * plane + c * plane + y * size + x, lut[u8[:, c]])


KERNELS = {"frame_segments": k_frame_segments, "mel_log_norm": k_mel_log_norm,
           "crop_lut_f32": k_crop_lut, "crop_lut_f16": k_crop_lut,
           "resize_crop_lut_f32": k_resize_crop_lut, "resize_crop_lut_f16": k_resize_crop_lut}


class RawKernel:
    def __init__(self, name: str, params: list[tuple[str, str, bool]], log: list):
        self.name, self.params, self.log = name, params, log

    def __call__(self, grid, block, args, *, shared_mem=0):
        assert isinstance(grid, tuple) and all(isinstance(g, int) and g >= 1 for g in grid), grid
        assert isinstance(block, tuple) and 1 <= int(np.prod(block)) <= 1024, block
        assert len(args) == len(self.params), f"{self.name}: {len(args)} args for {len(self.params)} params"
        named = {}
        for value, (pname, base, pointer) in zip(args, self.params):
            if pointer:
                assert isinstance(value, ndarray), f"{self.name}.{pname}: {type(value).__name__} is not a device array"
                assert value.dtype.type in POINTER_DTYPES[base], f"{self.name}.{pname}: {value.dtype} for {base}*"
            else:
                assert type(value) is SCALAR_TYPES[base], f"{self.name}.{pname}: {type(value).__name__} for {base}"
            named[pname] = value
        self.log.append(self.name)
        KERNELS[self.name](grid, block, shared_mem, named)


class RawModule:
    launches: list = []

    def __init__(self, code: str, options=()):
        self.signatures = parse_signatures(code)
        self.options = options

    def get_function(self, name: str) -> RawKernel:
        return RawKernel(name, self.signatures[name], RawModule.launches)


# ------------------------------------------------------------------------------------------ runtime
class Stream:
    """Records which streams waited on which (as (waiter ptr, recorder ptr) pairs in `Stream.waits`)."""

    count = 0
    waits: list = []

    def __init__(self, non_blocking=False, null=False):
        Stream.count += 1
        self.ptr = 0 if null else 1000 + Stream.count

    def synchronize(self):
        pass

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        Stream.waits.append((self.ptr, event.stream_ptr))

    def __enter__(self):
        _current.append(self)
        return self

    def __exit__(self, *exc):
        _current.pop()
        return False


_current = [Stream(null=True)]

class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.stream_ptr = None

    def record(self, stream=None):
        self.stream_ptr = (stream or _current[-1]).ptr

    def synchronize(self):
        pass


@contextmanager
def Device(i=0):
    yield


class Plan1d:
    def __init__(self, nx, fft_type, batch):
        assert fft_type == CUFFT_R2C
        self.nx, self.batch = nx, batch

    def fft(self, a, out, direction):
        assert a.shape == (self.batch, self.nx) and a.dtype == np.float32
        assert out.shape == (self.batch, self.nx // 2 + 1) and out.dtype == np.complex64
        np.copyto(np.asarray(out), np.fft.rfft(np.asarray(a).astype(np.float64), axis=-1).astype(np.complex64))


CUFFT_R2C, CUFFT_FORWARD = 0x2A, -1


def install(monkeypatch) -> types.ModuleType:
    """Fake cupy / cupy.cuda / cupy.cuda.cufft / cupyx in sys.modules; returns the fake cupy."""
    cp = types.ModuleType("cupy")
    cuda = types.ModuleType("cupy.cuda")
    cufft = types.ModuleType("cupy.cuda.cufft")
    cupyx = types.ModuleType("cupyx")
    cufft.Plan1d, cufft.CUFFT_R2C, cufft.CUFFT_FORWARD = Plan1d, CUFFT_R2C, CUFFT_FORWARD
    cuda.cufft, cuda.Stream, cuda.Event, cuda.Device = cufft, Stream, Event, Device
    cuda.get_current_stream = lambda: _current[-1]
    cuda.runtime = types.SimpleNamespace(getDevice=lambda: 0, getDeviceCount=lambda: 1)
    cp.cuda, cp.ndarray, cp.RawModule = cuda, ndarray, RawModule
    cp.float32, cp.uint8 = np.float32, np.uint8
    cp.empty = lambda shape, dtype=np.float32: _dev(np.empty(shape, dtype))
    cp.asarray = lambda a, dtype=None: a if isinstance(a, ndarray) and dtype is None else _dev(np.asarray(a, dtype))
    cp.ascontiguousarray = lambda a, dtype=None: _dev(np.ascontiguousarray(a, dtype))
    cp.from_dlpack = lambda x: _dev(np.from_dlpack(x))
    cp.asnumpy = lambda a: np.array(a)
    cp.concatenate = lambda arrays, axis=0: _dev(np.concatenate([np.asarray(a) for a in arrays], axis))
    cupyx.empty_pinned = lambda shape, dtype=np.float32: np.empty(shape, dtype)
    for name, mod in (("cupy", cp), ("cupy.cuda", cuda), ("cupy.cuda.cufft", cufft), ("cupyx", cupyx)):
        monkeypatch.setitem(sys.modules, name, mod)
    RawModule.launches = []
    Stream.waits = []
    return cp


ndarray.__module__ = "cupy"  # array libraries are told apart by their type's module, as for CuPy
