"""`sync-sdk serve`: the SDK as a model of a real Triton Inference Server (PyTriton), HTTP and gRPC.

    serve({"name_or_path": "synthetic-tiny"}, ServeOptions(media_root="/srv/media"))   # blocks until SIGINT/SIGTERM

Two models (NAME = options.name, default "synchformer"):

    NAME            one 5-s window (engine.predict). Inputs, all optional, one source per request:
                      path BYTES [1]   a file relative to --media-root (refused without it)
                      media BYTES [1]  the file's bytes
                      frames UINT8 [T,H,W,3] + fps FP32 [1] + audio FP32 [N] (mono PCM in [-1, 1]) +
                      sample_rate INT32 [1]
                      start_sec FP32 [1]  window start (s, default 0)
                      refine BOOL [1]  continuous offset_sec with an interval (engine.predict(refine=True))
                    outputs, offset model: offset_sec FP32 [1] (positive = audio leads), class_index
                      INT32 [1], confidence FP32 [1], probabilities FP32 [21], logits FP32 [21], flags
                      BYTES [1] ("silent_audio,static_video" or ""), class_offset_sec FP32 [1] (the
                      class's grid value), offset_interval_sec FP32 [2] (low, high s when refined, else
                      NaN); synchronizability model:
                      synchronizability FP32 [1] (probability that the window can be synchronised)
    NAME_features   visual-encoder features (engine.visual_features): path | media | frames (+ fps,
                    default 25); layout BYTES [1], duration_sec FP32 [1] optional; features FP32 [S*8, D]

Each request runs in a worker process (serving/job_worker.py) that is killed at the --timeout deadline;
requests are checked first against the limits (bytes, seconds, rates), and every failure is answered
as a Triton error whose message says what was wrong; the server goes on. Triton's own dynamic batcher
is not used: PyTriton fails every request of a batch when one of them fails, so one bad request would
fail the good ones batched with it; concurrency comes from the workers (one request at a time each).
Clients cannot load or unload models (`lock_down`: Triton's load API takes model files, i.e. code).
The Python backend stub that PyTriton ships loads the system's shared libpython, so the server runs in
an interpreter built with one (scripts/triton_env.sh makes that environment).
"""
from __future__ import annotations

import math
import os
import secrets
import signal
import socket
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sync_sdk.errors import BackendError, InputError, InvalidArrayError
from sync_sdk.extras import require_module
from sync_sdk.serving.job_worker import WorkerPool
from sync_sdk.serving.media_root import MediaRoot, check_name

ENV_SCRIPT = "scripts/triton_env.sh"
FPS_RANGE = (1.0, 1000.0)
RATE_RANGE = (1_000, 1_000_000)  # Hz, as for files (media/audio.py)
MAX_ASPECT = 16  # as for files (media/video.py)
MAX_TEXT_BYTES = 4096
EXIT_TIMEOUT_S = 5  # Triton waits this long for requests in flight when it stops
# gRPC APIs nobody gets the key of (PyTriton has no such option for HTTP: keep --host on loopback or
# behind a proxy that passes only /v2/health, /v2/models/*/ready and .../infer)
RESTRICTED = "model-repository,shared-memory,trace,logging"
HANDSHAKE_RETRY = """

# appended by sync-sdk serve (sync_sdk/serving/triton_server.py, patient_handshake)
_get_config_once = get_config_from_handshake_server


def get_config_from_handshake_server(socket_path, timeout_s=60.0):
    deadline = time.time() + timeout_s
    while True:
        try:
            return _get_config_once(socket_path, timeout_s=1.0)
        except OSError:  # no socket yet (TimeoutError), or not listening yet (ConnectionRefusedError)
            if time.time() > deadline:
                raise
            time.sleep(0.05)
"""


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to serve. host: address of both endpoints (127.0.0.1: this machine only);
    metrics_port: Prometheus metrics on host (None: off); media_root: the folder client paths are
    relative to (None: paths refused); workers: worker processes (requests run at once); timeout_s:
    deadline of one request (s); max_request_bytes: media bytes, or frames + audio bytes, of one request;
    max_seconds: longest media in arrays, and longest features request (s)."""

    name: str = "synchformer"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = None
    media_root: str | Path | None = None
    workers: int = 2
    timeout_s: float = 30.0
    max_request_bytes: int = 64 << 20
    max_seconds: float = 60.0


# ---------------------------------------------------------------------------- requests
def _text(data: dict, key: str) -> str:
    values = np.asarray(data[key]).reshape(-1)
    value = values[0] if values.size == 1 else None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes) or len(value) > MAX_TEXT_BYTES:
        raise InputError(f"`{key}` must be one UTF-8 string of at most {MAX_TEXT_BYTES} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"`{key}` is not valid UTF-8") from None


def _number(data: dict, key: str, low: float, high: float, unit: str) -> float:
    values = np.asarray(data[key]).reshape(-1)
    value = float(values[0]) if values.size == 1 else math.nan
    if not low <= value <= high:  # also refuses nan
        raise InputError(f"`{key}` must be one number in [{low:g}, {high:g}] {unit}, got {values[:4].tolist()}")
    return round(value, 6)  # FP32 0.32 is 0.3199999928: as sent, it would pick the frame before 0.32 s


def _arrays_source(data: dict, limits: ServeOptions, audio: bool) -> tuple[dict, dict]:
    frames = np.asarray(data["frames"])
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape) == 0:
        raise InvalidArrayError(f"`frames` must be uint8 (T, H, W, 3) with T, H, W >= 1, got {frames.dtype} "
                                f"{frames.shape}")
    h, w = frames.shape[1:3]
    if max(h, w) > MAX_ASPECT * min(h, w):
        raise InvalidArrayError(f"`frames` are {w}x{h}; sides at most {MAX_ASPECT} times apart are supported")
    fps = _number(data, "fps", *FPS_RANGE, "frames per second") if "fps" in data else 25.0
    header, arrays, n_bytes = {"source": "arrays", "fps": fps}, {"frames": frames}, frames.nbytes
    seconds = {"frames": len(frames) / fps}
    if audio:
        missing = [k for k in ("fps", "audio", "sample_rate") if k not in data]
        if missing:
            raise InputError(f"`frames` come with {', '.join(f'`{k}`' for k in missing)} (fps, mono float32 "
                             "audio and its sample rate in Hz)")
        pcm = np.asarray(data["audio"])
        if pcm.dtype != np.float32 or pcm.ndim != 1 or pcm.size == 0 or not np.isfinite(pcm).all():
            raise InvalidArrayError(f"`audio` must be non-empty finite mono float32 (N,), got {pcm.dtype} {pcm.shape}")
        rate = _number(data, "sample_rate", *RATE_RANGE, "Hz")
        if not rate.is_integer():
            raise InvalidArrayError(f"`sample_rate` must be a whole number of Hz, got {rate}")
        header["sample_rate"], arrays["audio"] = int(rate), pcm
        n_bytes += pcm.nbytes
        seconds["audio"] = pcm.size / rate
    if n_bytes > limits.max_request_bytes:
        raise InputError(f"the arrays hold {n_bytes / 2**20:.1f} MiB; requests of at most "
                         f"{limits.max_request_bytes / 2**20:g} MiB are served (--max-request-mb)")
    for what, sec in seconds.items():
        if sec > limits.max_seconds:
            raise InputError(f"the {what} last {sec:.1f} s; at most {limits.max_seconds:g} s per request are "
                             "served (--max-seconds)")
    return header, arrays


def parse_request(data: dict, job: str, limits: ServeOptions) -> tuple[dict, dict]:
    """The worker job (header, arrays) of one request's inputs `data` (name -> array); InputError
    saying what is wrong and what is expected. job: "predict" | "features"."""
    given = [k for k in ("path", "media", "frames") if k in data]
    array_keys = ("fps", "audio", "sample_rate") if job == "predict" else ("fps",)
    if len(given) != 1:
        raise InputError("send one source: `path` (relative to the server's media root), `media` (the file's "
                         f"bytes) or `frames` with {', '.join(array_keys)}; got {given or 'none'}")
    stray = [k for k in array_keys if k in data and given[0] != "frames"]
    if stray:
        raise InputError(f"{', '.join(stray)} go with `frames` only, not with `{given[0]}`")
    if given[0] == "path":
        if limits.media_root is None:
            raise InputError("this server takes no media paths (it was started without --media-root); send the "
                             "file's bytes as `media` instead")
        header, arrays = {"source": "path", "name": check_name(_text(data, "path"))}, {}
    elif given[0] == "media":
        raw = np.asarray(data["media"]).reshape(-1)
        blob = raw[0] if raw.size == 1 else None
        if not isinstance(blob, bytes) or not blob or len(blob) > limits.max_request_bytes:
            raise InputError(f"`media` must be one non-empty file of at most {limits.max_request_bytes / 2**20:g} "
                             "MiB (--max-request-mb)")
        header, arrays = {"source": "media"}, {"media": np.frombuffer(blob, np.uint8)}
    else:
        header, arrays = _arrays_source(data, limits, audio=job == "predict")
    header["job"] = job
    if job == "predict":
        header["start_sec"] = _number(data, "start_sec", 0.0, 1e7, "s") if "start_sec" in data else 0.0
        if "refine" in data:
            flag = np.asarray(data["refine"]).reshape(-1)
            if flag.size != 1 or flag.dtype != np.bool_:
                raise InputError("`refine` must be one BOOL")
            header["refine"] = bool(flag[0])
    else:
        if "layout" in data:
            header["layout"] = _text(data, "layout")
        if "duration_sec" in data:
            header["duration_sec"] = _number(data, "duration_sec", 1e-3, limits.max_seconds, "s (--max-seconds)")
    return header, arrays


def _outputs(fields: dict, arrays: dict) -> dict[str, np.ndarray]:
    out = dict(arrays)
    if "flags" in fields:
        out["flags"] = np.array([",".join(fields["flags"]).encode()], dtype=object)
    return out


# ---------------------------------------------------------------------------- models
def model_io(info: dict, name: str) -> list[tuple[str, str, list, list]]:
    """(model name, job, inputs, outputs) of the two models, as PyTriton Tensors, for the model
    `info` (the workers' {"variant", "num_classes", "v_dim"})."""
    Tensor = require_module("pytriton.model_config", "serve", "sync-sdk serve").Tensor

    def t(key: str, dtype, shape: tuple, optional: bool = False):
        return Tensor(name=key, dtype=dtype, shape=shape, optional=optional)

    sources = [t("path", bytes, (1,), True), t("media", bytes, (1,), True),
               t("frames", np.uint8, (-1, -1, -1, 3), True), t("fps", np.float32, (1,), True)]
    window_in = sources + [t("audio", np.float32, (-1,), True), t("sample_rate", np.int32, (1,), True),
                           t("start_sec", np.float32, (1,), True), t("refine", np.bool_, (1,), True)]
    c = info["num_classes"]
    if info["variant"] == "synchronizability":
        window_out = [t("synchronizability", np.float32, (1,))]
    else:
        window_out = [t("offset_sec", np.float32, (1,)), t("class_index", np.int32, (1,)),
                      t("confidence", np.float32, (1,)), t("probabilities", np.float32, (c,)),
                      t("logits", np.float32, (c,)), t("flags", bytes, (1,)), t("class_offset_sec", np.float32, (1,)),
                      t("offset_interval_sec", np.float32, (2,))]
    features_in = sources + [t("layout", bytes, (1,), True), t("duration_sec", np.float32, (1,), True)]
    return [(name, "predict", window_in, window_out),
            (f"{name}_features", "features", features_in, [t("features", np.float32, (-1, info["v_dim"]))])]


def make_handler(pool: WorkerPool, job: str, options: ServeOptions) -> Callable:
    """The PyTriton inference callable of `job`: each request checked, run on a worker, answered."""
    def infer(requests):
        answers = []
        for request in requests:
            header, arrays = parse_request(request.data, job, options)
            answers.append(_outputs(*pool.call(header, arrays, options.timeout_s)))
        return answers
    return infer


def check_interpreter() -> None:
    """BackendError unless this Python has a shared libpython (what the backend stub loads)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise BackendError(
            f"sync-sdk serve runs Triton's Python backend, whose stub loads the system's shared libpython; this "
            f"Python ({sys.executable}, {sys.version.split()[0]}) is built without one, so the model would not "
            f"load. Build the serving environment from Debian's python3.11 with `bash {ENV_SCRIPT}` and run "
            "its sync-sdk (build/serve-venv/bin/sync-sdk serve ...)")


def lock_down(triton) -> None:
    """No model loads or unloads through the server's API: Triton's load request can carry model files,
    a Python model among them, so an open API runs its clients' code. PyTriton 0.6.0 starts Triton in
    "explicit" mode with --load-model=* and has no switch for it; with the models in its local model
    store, "none" mode loads them at start and refuses every load and unload (tests check it). On gRPC
    the RESTRICTED APIs also need a header whose key nobody is given (PyTriton passes no such flag
    for HTTP)."""
    args = triton._triton_server_config
    args["model-control-mode"] = "none"
    args["load-model"] = None
    args["grpc-restricted-protocol"] = f"{RESTRICTED}:sync-sdk-admin={secrets.token_hex(16)}"


def patient_handshake(store: Path, model: str) -> None:
    """Make a model's later instances wait and retry, up to a minute, for its first instance's handshake
    socket. PyTriton 0.6.0 tries once within 1 s; the first instance starts a process to share tensors
    before it listens, so on a busy machine the others find no socket, or one not yet listening, and
    the model fails to load. The retry is appended to the copy of PyTriton's communication.py in the
    model store (what the instances import)."""
    path = Path(store) / model / "1" / "communication.py"
    text = path.read_text()
    if "\ndef get_config_from_handshake_server(" not in text:
        raise BackendError(f"{path}: PyTriton's handshake is not the one sync-sdk serve knows; install the "
                           "pinned nvidia-pytriton (pip install 'sync-sdk[serve]')")
    path.write_text(text + HANDSHAKE_RETRY)


def check_ports(options: ServeOptions) -> None:
    """InputError when a port the server needs is taken (Triton would exit; PyTriton would wait 2 min)."""
    for option, number in (("--http-port", options.http_port), ("--grpc-port", options.grpc_port),
                           ("--metrics-port", options.metrics_port)):
        if number is None:
            continue
        with socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((options.host, number))
            except OSError as e:
                raise InputError(f"{option} {number}: cannot listen on {options.host}:{number} ({e.strerror}); "
                                 "choose a free port") from None


def serve(engine_kwargs: dict, options: ServeOptions, say: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT or SIGTERM, then stop Triton and the workers; returns 0. engine_kwargs:
    SyncEngine.from_pretrained's (name_or_path, backend, device, precision, threads, shift_views, ...).
    Raises BackendError when the model does not load or Triton stops by itself."""
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    check_interpreter()
    triton_mod = require_module("pytriton.triton", "serve", "sync-sdk serve")
    config_mod = require_module("pytriton.model_config", "serve", "sync-sdk serve")
    workspace_mod = require_module("pytriton.utils.workspace", "serve", "sync-sdk serve")
    check_ports(options)
    root = str(MediaRoot(options.media_root).root) if options.media_root is not None else None
    pool = WorkerPool(options.workers, {"engine": engine_kwargs, "media_root": root,
                                        "max_seconds": options.max_seconds})
    info = pool.start()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    triton = None
    try:
        metrics = {"allow_metrics": False} if options.metrics_port is None else \
            {"allow_metrics": True, "metrics_port": options.metrics_port, "metrics_address": options.host}
        config = triton_mod.TritonConfig(
            http_address=options.host, http_port=options.http_port, grpc_address=options.host,
            grpc_port=options.grpc_port, exit_timeout_secs=EXIT_TIMEOUT_S, allow_sagemaker=False,
            allow_vertex_ai=False, **metrics)
        # models are written to the model store first and loaded when the server starts
        local_store = triton_mod.TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True)
        workspace = workspace_mod.Workspace()
        triton = triton_mod.Triton(config=config, workspace=workspace, triton_lifecycle_policy=local_store)
        lock_down(triton)
        names = []
        for model, job, inputs, outputs in model_io(info, options.name):
            handlers = [make_handler(pool, job, options) for _ in range(options.workers)]
            triton.bind(model, handlers, inputs, outputs, config=config_mod.ModelConfig(batching=False))
            patient_handshake(workspace.model_store_path, model)
            names.append(model)
        try:
            triton.run()
        except Exception as e:  # PyTriton's own errors, e.g. a model that did not load
            raise BackendError(f"Triton Inference Server did not start ({type(e).__name__}: {e}); its log is "
                               "above") from e
        say(f"serving {info['model_id']} ({info['variant']}, {info['backend']}, {options.workers} workers) as "
            f"{', '.join(names)}: HTTP {options.host}:{options.http_port}, gRPC {options.host}:{options.grpc_port}; "
            f"media paths {'under ' + root if root else 'refused (no --media-root)'}; pid {os.getpid()}, "
            "stop with Ctrl-C or SIGTERM")
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise BackendError("Triton Inference Server stopped by itself; its log is above")
        say("stopping")
    finally:
        if triton is not None:
            triton.stop()
        pool.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
