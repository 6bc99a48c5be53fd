"""Worker processes that run the server's requests, one at a time each, with their own engine.

Decoding media from clients is the risky part of a server: a file can be slow to decode (large frames,
high frame rates) or crash the decoder. Each request therefore runs in a worker process
(`python -m sync_sdk.serving.job_worker`) that the server kills and restarts when the request passes
its deadline or the process dies; the server itself only validates requests and passes them on.

Messages both ways are one JSON line (scalars, strings) followed by the raw bytes of numeric arrays
(dtype and shape in the JSON; no pickle, so a compromised worker cannot run code in the server).
Jobs: {"job": "predict", "source": ..., "start_sec", "refine" (optional)} and {"job": "features", "source": ..., "layout",
"duration_sec"}, source "path" (`name`, inside the media root), "media" (array `media`: the file's
bytes) or "arrays" (arrays `frames` (T, H, W, 3) uint8, `audio` (N,) float32; `fps`, `sample_rate`).
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import subprocess
import sys
from typing import BinaryIO, Iterator

import numpy as np

import sync_sdk.errors as errors
from sync_sdk.errors import BackendError, InputError, MediaDecodeError, SyncSDKError
from sync_sdk.media import probe

MAX_HEADER_BYTES = 1 << 20
READY_TIMEOUT_S = 600.0  # a worker loading a large checkpoint (or downloading it) may take minutes


# ---------------------------------------------------------------------------- messages
def send(stream: BinaryIO, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    """Write one message: `header` as a JSON line, then each array's bytes (C order)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    specs = [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()]
    stream.write(json.dumps({**header, "arrays": specs}).encode() + b"\n")
    for v in arrays.values():
        stream.write(memoryview(v.reshape(-1)).cast("B"))
    stream.flush()


def recv(stream: BinaryIO) -> tuple[dict, dict[str, np.ndarray]] | None:
    """Read one message written by `send`; None at end of stream."""
    line = stream.readline(MAX_HEADER_BYTES)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise BackendError("worker message header is cut or longer than 1 MiB")
    header = json.loads(line)
    arrays = {}
    for name, dtype, shape in header.pop("arrays"):
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise BackendError(f"worker message array {name} has an object dtype; expected numbers")
        n = dt.itemsize * int(np.prod(shape, dtype=np.int64))
        data = stream.read(n)
        if len(data) != n:
            raise BackendError(f"worker message array {name} is cut: {len(data)} of {n} bytes")
        arrays[name] = np.frombuffer(data, dt).reshape(shape)
    return header, arrays


# ---------------------------------------------------------------------------- the worker process
@contextlib.contextmanager
def _source(header: dict, arrays: dict, media_root) -> Iterator[tuple[object, str | None]]:
    """(what the engine reads, the name to show for it in messages)."""
    kind = header["source"]
    if kind == "path":
        if media_root is None:
            raise InputError("this server takes no media paths (it was started without --media-root); "
                             "send the file's bytes as `media` instead")
        with media_root.open(header["name"]) as path:
            yield path, f"media path {header['name']!r}"
    elif kind == "media":
        fd = os.memfd_create("media", os.MFD_CLOEXEC)  # the bytes as a file, in memory only
        try:
            view = memoryview(arrays["media"]).cast("B")
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}", "the request's media"
        finally:
            os.close(fd)
    else:
        yield (arrays["frames"], header["fps"], arrays["audio"], header["sample_rate"]), None


def _predict(engine, source, header: dict) -> tuple[dict, dict]:
    if engine.config.variant == "synchronizability":
        p = engine.synchronizability(source, start_sec=header["start_sec"])
        return {}, {"synchronizability": np.array([p], np.float32)}
    r = engine.predict(source, start_sec=header["start_sec"], refine=header.get("refine", False))
    return {"flags": list(r.flags)}, {
        "offset_sec": np.array([r.offset_sec], np.float32), "class_index": np.array([r.class_index], np.int32),
        "confidence": np.array([r.confidence], np.float32), "probabilities": r.probs.astype(np.float32),
        "logits": r.logits.astype(np.float32), "class_offset_sec": np.array([r.class_offset_sec], np.float32),
        "offset_interval_sec": np.array(r.offset_interval_sec or (np.nan, np.nan), np.float32)}


def _features(engine, source, header: dict, max_seconds: float) -> tuple[dict, dict]:
    kwargs = {k: header[k] for k in ("layout", "duration_sec") if header.get(k) is not None}
    if isinstance(source, tuple):  # arrays: frames at fps (the server checked their length)
        source, kwargs["fps"] = source[0], source[1]
    elif "duration_sec" not in kwargs:
        length = probe(source).duration_sec
        if length is not None and length > max_seconds:
            raise InputError(f"the media is {length:.1f} s long; features cover at most {max_seconds:g} s per "
                             "request (the server's --max-seconds): send duration_sec")
    feats = engine.visual_features(source, **kwargs)
    return {}, {"features": np.ascontiguousarray(feats, np.float32)}


def _error(e: BaseException, source, label: str | None) -> dict:
    message = str(e)
    if isinstance(source, str) and label:
        message = message.replace(source, label)
    kind = type(e).__name__ if isinstance(e, SyncSDKError) else f"internal {type(e).__name__}"
    return {"status": "error", "type": kind, "message": message}


def worker_main() -> int:
    """The worker's loop: an init message (engine options), then one reply per job until stdin closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, not into the replies
    inp = sys.stdin.buffer
    first = recv(inp)
    if first is None:
        return 0
    init = first[0]
    try:
        from sync_sdk.engine import SyncEngine
        from sync_sdk.serving.media_root import MediaRoot
        engine = SyncEngine.from_pretrained(**init["engine"])
        root = MediaRoot(init["media_root"]) if init.get("media_root") else None
    except Exception as e:  # reported to the server, which stops with it
        send(out, _error(e, None, None))
        return 1
    c = engine.config
    send(out, {"status": "ready", "model_id": engine.model_id, "variant": c.variant, "v_dim": c.v_dim,
               "num_classes": c.num_classes, "backend": engine.backend.name})
    jobs = {"predict": lambda src, h: _predict(engine, src, h),
            "features": lambda src, h: _features(engine, src, h, init["max_seconds"])}
    while (msg := recv(inp)) is not None:
        header, arrays = msg
        source = label = None
        try:
            with _source(header, arrays, root) as (source, label):
                fields, outputs = jobs[header["job"]](source, header)
        except Exception as e:  # every failure is this request's answer
            send(out, _error(e, source, label))
            continue
        send(out, {"status": "ok", **fields}, outputs)
    return 0


# ---------------------------------------------------------------------------- the server's side
def _raise(reply: dict) -> None:
    """Raise the error a worker reported, as its sync_sdk.errors type where it has one."""
    cls = getattr(errors, reply["type"], None)
    if isinstance(cls, type) and issubclass(cls, SyncSDKError):
        raise cls(reply["message"])
    raise BackendError(f"the server failed on this request ({reply['type']}): {reply['message']}")


class Worker:
    """One worker process and its pipes; restarted on the next call after a kill or a crash."""

    def __init__(self, init: dict) -> None:
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def spawn(self) -> None:
        # its own session: a Ctrl-C at the terminal reaches the server, which then closes its workers
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, start_new_session=True)
        send(self.proc.stdin, self.init)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict:
        """The worker's {"model_id", "variant", "v_dim", "num_classes", "backend"} once its engine is loaded."""
        if not self._readable(timeout_s):
            self.kill()
            raise BackendError(f"the worker process did not load the model within {timeout_s:g} s")
        reply = recv(self.proc.stdout)
        if reply is None:
            code = self.kill()
            raise BackendError(f"the worker process stopped (exit code {code}) while loading the model; its "
                               "messages are above")
        if reply[0].get("status") != "ready":
            self.kill()
            _raise(reply[0])
        self.info = reply[0]
        return self.info

    def _readable(self, timeout_s: float) -> bool:
        return bool(select.select([self.proc.stdout], [], [], max(timeout_s, 0.0))[0])

    def call(self, header: dict, arrays: dict, timeout_s: float) -> tuple[dict, dict]:
        """One job's reply (header, arrays); its error raised; InputError after `timeout_s` (worker killed)."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self.spawn()
            self.wait_ready()
        try:
            send(self.proc.stdin, header, arrays)
        except (BrokenPipeError, ValueError):
            code = self.kill()
            raise BackendError(f"the worker process stopped (exit code {code}) before it took the request; "
                               "send it again") from None
        if not self._readable(timeout_s):
            self.kill()
            raise InputError(f"the request took longer than the server's {timeout_s:g}-s deadline (--timeout) "
                             "and was stopped; send shorter or smaller media")
        reply = recv(self.proc.stdout)
        if reply is None:
            code = self.kill()
            raise MediaDecodeError(f"the worker process died (exit code {code}) on this request; the media may "
                                   "be malformed. The server goes on with a new worker")
        if reply[0].get("status") != "ok":
            _raise(reply[0])
        return reply

    def kill(self) -> int | None:
        """Stop the process now; its exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        proc.kill()
        code = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        return code

    def close(self, grace_s: float = 5.0) -> None:
        """Let the process end after its current job (stdin closed), else kill it."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


class WorkerPool:
    """n workers; `call` runs a job on a free one (waiting for one up to the job's deadline)."""

    def __init__(self, n: int, init: dict) -> None:
        if n < 1:
            raise InputError(f"the server needs at least one worker process, got {n}")
        self.workers = [Worker(init) for _ in range(n)]
        self._free: queue.Queue[Worker] = queue.Queue()

    def start(self) -> dict:
        """Start every worker; the first one's model info. Raises (and stops them) when one fails."""
        try:
            for w in self.workers:
                w.spawn()
            infos = [w.wait_ready() for w in self.workers]
        except BaseException:
            self.close()
            raise
        for w in self.workers:
            self._free.put(w)
        return infos[0]

    def call(self, header: dict, arrays: dict, timeout_s: float) -> tuple[dict, dict]:
        try:
            worker = self._free.get(timeout=timeout_s)
        except queue.Empty:
            raise BackendError(f"all {len(self.workers)} worker processes stayed busy for {timeout_s:g} s; "
                               "the server is overloaded, send the request again later") from None
        try:
            return worker.call(header, arrays, timeout_s)
        finally:
            self._free.put(worker)

    def close(self) -> None:
        for w in self.workers:
            w.close()


if __name__ == "__main__":
    sys.exit(worker_main())
