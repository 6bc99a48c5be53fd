"""PyTorch-CUDA backend: the reference model in FP16 on a GPU, replayed as CUDA graphs.

The GPU fast path where TensorRT is missing. Inputs may be CuPy arrays (zero-copy through DLPack, e.g.
straight from `sync_sdk.inputs.gpu.GpuFeatures`), torch CUDA tensors or NumPy arrays; outputs are float32 in
the same kind (CuPy in -> CuPy out, NumPy in -> NumPy out, torch in -> torch out).

Each (stage, input shape) is captured once as a CUDA graph (after a warm-up on a side stream) and
replayed afterwards: the input is copied into the graph's static buffer, the graph replays on the
backend's stream, and a copy of the static output is returned. Pass `stream=GpuFeatures.stream` to
queue everything on the features' stream: no synchronisation happens between the two. Work is
ordered after the caller's current torch stream; CuPy results are handed over by DLPack's stream
protocol, torch results by making the caller's stream wait, NumPy results are copied synchronously.
"""
from __future__ import annotations

import numpy as np
import torch

from sync_sdk.config import ModelConfig
from sync_sdk.errors import BackendError, InputError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class TorchCudaBackend:
    """encode_audio (N,1,128,66) -> (N,6,a_dim); encode_video (N,16,3,224,224) -> (N,8,v_dim);
    head (B,S*8,v_dim), (B,S*6,a_dim) -> (B,num_classes). All outputs float32.

    model: a `sync_sdk.model.Synchformer` (moved to the device and cast to `precision` in place).
    precision: "fp16" (default), "bf16" or "fp32" (weights and activations).
    stream: a cupy Stream, a torch CUDA stream, or None (a new torch stream).
    cuda_graphs: capture and replay each input shape (False = eager, for debugging).
    """

    device_arrays = True  # CuPy in -> CuPy out

    def __init__(self, model: torch.nn.Module, device: str | int | torch.device = "cuda",
                 precision: str = "fp16", stream=None, cuda_graphs: bool = True) -> None:
        if not torch.cuda.is_available():
            raise BackendError("the torch-cuda backend needs a CUDA build of torch and an NVIDIA GPU")
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
        self.device = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
        if self.device.type != "cuda":
            raise BackendError(f"the torch-cuda backend runs on a CUDA device, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.config: ModelConfig = model.config
        self.name = f"torch-cuda-{precision}"
        self.model_id = ""
        self.cuda_graphs = bool(cuda_graphs)
        self.stream = self._torch_stream(stream)
        self._graphs: dict[tuple, tuple] = {}

    def _torch_stream(self, stream) -> torch.cuda.Stream:
        if stream is None:
            return torch.cuda.Stream(device=self.device)
        if isinstance(stream, torch.cuda.Stream):
            return stream
        ptr = getattr(stream, "ptr", None)  # cupy.cuda.Stream
        if ptr is None:
            raise TypeError(f"stream must be a cupy or torch CUDA stream, got {type(stream).__name__}")
        return torch.cuda.ExternalStream(ptr, device=self.device)

    # ------------------------------------------------------------------ protocol
    def encode_audio(self, aud):
        """aud (N, 1, 128, 66) log-mel -> (N, 6, a_dim) float32."""
        return self._run("audio", self.model.encode_audio, aud, ndim=4)

    def encode_video(self, vid):
        """vid (N, 16, 3, 224, 224) normalised frames -> (N, 8, v_dim) float32."""
        return self._run("video", self.model.encode_video, vid, ndim=5)

    def head(self, vfeat, afeat):
        """vfeat (B, S*8, v_dim), afeat (B, S*6, a_dim) -> logits (B, num_classes) float32."""
        return self._run("head", self.model.head, vfeat, afeat, ndim=3)

    # ------------------------------------------------------------------ running
    def _run(self, stage: str, fn, *arrays, ndim: int):
        for a in arrays:
            if len(a.shape) != ndim:
                raise InputError(f"{stage}: expected a {ndim}-d input, got shape {tuple(a.shape)}")
        kind = _kind(arrays[0])
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream()
            with torch.cuda.stream(self.stream), torch.inference_mode():
                self.stream.wait_stream(caller)  # torch inputs made on the caller's stream are ready
                tensors = [self._to_tensor(a, k) for a, k in zip(arrays, map(_kind, arrays))]
                if self.cuda_graphs:
                    out = self._replay(stage, fn, tensors)
                else:
                    out = fn(*[t.to(self.dtype) for t in tensors]).float()
                if kind == "torch":  # hand the result to the caller's stream
                    caller.wait_stream(self.stream)
                    out.record_stream(caller)
                return self._from_tensor(out, kind)

    def _to_tensor(self, a, kind: str) -> torch.Tensor:
        if kind == "torch":
            return a.to(self.device, non_blocking=True)
        if kind == "cupy":
            return torch.from_dlpack(a)  # shares memory; cupy's stream -> ours ordering via DLPack
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _from_tensor(self, t: torch.Tensor, kind: str):
        if kind == "torch":
            return t
        if kind == "cupy":
            import cupy
            return cupy.from_dlpack(t)  # cupy's current stream waits for ours
        return t.cpu().numpy()

    def _replay(self, stage: str, fn, tensors: list[torch.Tensor]) -> torch.Tensor:
        key = (stage, *(tuple(t.shape) for t in tensors))
        if key not in self._graphs:
            self._graphs[key] = self._capture(fn, tensors)
        graph, static_in, static_out = self._graphs[key]
        for dst, src in zip(static_in, tensors):
            dst.copy_(src)
        graph.replay()
        return static_out.clone()

    def _capture(self, fn, tensors: list[torch.Tensor]) -> tuple:
        """Warm up on a side stream, then capture `fn` on static inputs (torch's documented recipe)."""
        static_in = [torch.empty(t.shape, dtype=self.dtype, device=self.device) for t in tensors]
        for dst, src in zip(static_in, tensors):
            dst.copy_(src)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = fn(*static_in).float()
        return graph, static_in, static_out


def _kind(a) -> str:
    """'torch', 'cupy' or 'numpy' (anything else is read as NumPy)."""
    if isinstance(a, torch.Tensor):
        return "torch"
    if type(a).__module__.split(".")[0] == "cupy":
        return "cupy"
    return "numpy"
