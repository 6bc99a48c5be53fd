"""`sync-sdk serve` against a real Triton Inference Server (the tritonserver in the nvidia-pytriton wheel).

The server runs in the serving environment (`bash scripts/triton_env.sh` builds build/serve-venv, or
$SYNC_SDK_SERVE_PYTHON names its python) and is queried with tritonclient over HTTP and gRPC, so these
tests run in that environment: `build/serve-venv/bin/python -m pytest -q tests/test_triton_server.py`.
Elsewhere the server tests skip with that reason; the request checks and path confinement run anywhere.
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sync_sdk.errors import BackendError, InputError, InvalidArrayError, MediaNotFoundError
from sync_sdk.serving.media_root import MediaRoot
from sync_sdk.serving.triton_server import ServeOptions, check_interpreter, parse_request
from sync_sdk.synthetic import generate_clip, write_clip

REPO = Path(__file__).resolve().parents[1]
SERVE_PYTHON = Path(os.environ.get("SYNC_SDK_SERVE_PYTHON", REPO / "build" / "serve-venv" / "bin" / "python"))
HOW = ("bash scripts/triton_env.sh && build/serve-venv/bin/python -m pytest -q tests/test_triton_server.py")
WINDOW_OUT = ("offset_sec", "class_index", "confidence", "probabilities", "logits", "flags", "class_offset_sec",
              "offset_interval_sec")
ATOL = 1e-4  # the server's workers run ONNX Runtime with other thread counts than this process


def _serve_env_reason() -> str | None:
    try:
        import tritonclient.grpc  # noqa: F401
        import tritonclient.http  # noqa: F401
    except ImportError:
        return f"tritonclient is not installed in this Python; the server tests run in the serving env: {HOW}"
    if not SERVE_PYTHON.exists():
        return f"no serving environment at {SERVE_PYTHON} (set SYNC_SDK_SERVE_PYTHON): {HOW}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- media
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """A media root with clips, a nested clip, a symlink inside, and things that must be refused."""
    base = tmp_path_factory.mktemp("serve")
    root, outside = base / "root", base / "outside"
    clips = {"a.mp4": generate_clip(1, offset_sec=0.4, duration_sec=5.6),
             "sub/b.mp4": generate_clip(2, offset_sec=-0.6, duration_sec=5.2)}
    for name, clip in clips.items():
        write_clip(clip, root / name)
    write_clip(generate_clip(3, duration_sec=5.2), outside / "secret.mp4")
    (root / "link_in.mp4").symlink_to(root / "a.mp4")
    (root / "link_out.mp4").symlink_to(outside / "secret.mp4")
    (root / "zero").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo")
    (root / "empty_dir").mkdir()
    small = generate_clip(5, offset_sec=0.2, duration_sec=5.2, size=(96, 128))  # 4.8 MB of frames
    return {"root": root, "outside": outside, "clips": clips, "small": small}


ESCAPES = [  # (path sent, words the error must contain)
    ("{outside}/secret.mp4", "is absolute"),
    ("/dev/zero", "is absolute"),
    ("../outside/secret.mp4", "'..'"),
    ("sub/../../outside/secret.mp4", "'..'"),
    ("link_out.mp4", "outside the server's media root"),
    ("zero", "outside the server's media root"),
    ("fifo", "is a FIFO"),
    ("empty_dir", "is a folder"),
    ("missing.mp4", "no such file"),
    ("", "non-empty relative path"),
]


@pytest.mark.parametrize("name,words", ESCAPES)
def test_media_root_refuses_escapes(media, name, words):
    root = MediaRoot(media["root"])
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        with root.open(name.format(outside=media["outside"])):
            pass


def test_media_root_opens_files_inside(media):
    root = MediaRoot(media["root"])
    for name in ("a.mp4", "sub/b.mp4", "link_in.mp4", "./sub/b.mp4"):
        with root.open(name) as path:
            assert path.startswith("/proc/self/fd/") and Path(path).read_bytes()[4:8] == b"ftyp"
    with pytest.raises(MediaNotFoundError):
        with root.open("nope.mp4"):
            pass


# ---------------------------------------------------------------------------- request checks (no server)
def _arrays(clip, **extra) -> dict:
    return {"frames": clip.frames, "fps": np.array([clip.fps], np.float32), "audio": clip.audio,
            "sample_rate": np.array([clip.sample_rate], np.int32), **extra}


BAD_REQUESTS = [  # (inputs, words)
    ({}, "send one source"),
    ({"path": np.array([b"a.mp4"], object), "media": np.array([b"x"], object)}, "send one source"),
    ({"path": np.array([b"a.mp4"], object), "fps": np.array([25], np.float32)}, "go with `frames` only"),
    ({"path": np.array([b"\xff\xfe"], object)}, "not valid UTF-8"),
    ({"path": np.array([b"x" * 5000], object)}, "at most 4096 bytes"),
    ({"media": np.array([b""], object)}, "non-empty file"),
    ({"media": np.array([b"x" * (2 << 20)], object)}, "at most 1 MiB"),
    ({"frames": np.zeros((10, 32, 32, 3), np.uint8)}, "come with `fps`, `audio`, `sample_rate`"),
]


@pytest.mark.parametrize("inputs,words", BAD_REQUESTS)
def test_parse_request_refuses(inputs, words):
    with pytest.raises(InputError, match=words):
        parse_request(inputs, "predict", ServeOptions(media_root="/srv", max_request_bytes=1 << 20, max_seconds=10))


def test_parse_request_refuses_paths_without_media_root():
    with pytest.raises(InputError, match="started without --media-root"):
        parse_request({"path": np.array([b"a.mp4"], object)}, "predict", ServeOptions())
    header, _ = parse_request({"path": np.array([b"a.mp4"], object)}, "features", ServeOptions(media_root="/m"))
    assert header == {"source": "path", "name": "a.mp4", "job": "features"}


def test_parse_request_checks_arrays():
    clip = generate_clip(4, duration_sec=5.2)
    options = ServeOptions(max_request_bytes=64 << 20, max_seconds=10)
    header, arrays = parse_request(_arrays(clip, start_sec=np.array([0.2], np.float32)), "predict", options)
    assert header == {"source": "arrays", "fps": 25.0, "sample_rate": 16000, "job": "predict", "start_sec":
                      pytest.approx(0.2)}
    assert arrays["frames"] is clip.frames
    for bad, words in [({"fps": np.array([0], np.float32)}, "`fps` must be one number"),
                       ({"fps": np.array([1], np.float32)}, "last 130.0 s"),
                       ({"sample_rate": np.array([10], np.int32)}, "`sample_rate` must be one number"),
                       ({"audio": np.full(8, np.nan, np.float32)}, "finite mono float32"),
                       ({"frames": np.zeros((4, 8, 200, 3), np.uint8)}, "at most 16 times apart"),
                       ({"start_sec": np.array([np.nan], np.float32)}, "`start_sec` must be one number"),
                       ({"refine": np.array([1, 1], np.int32)}, "`refine` must be one BOOL")]:
        with pytest.raises(InputError, match=words):
            parse_request(_arrays(clip, **bad), "predict", options)
    with pytest.raises(InputError, match="requests of at most 1 MiB"):
        parse_request(_arrays(clip), "predict", ServeOptions(max_request_bytes=1 << 20))
    with pytest.raises(InvalidArrayError, match="uint8"):
        parse_request(_arrays(clip, frames=clip.frames.astype(np.float32)), "predict", options)
    header, _ = parse_request({"frames": clip.frames, "duration_sec": np.array([2.0], np.float32)}, "features",
                              options)
    assert header == {"source": "arrays", "fps": 25.0, "job": "features", "duration_sec": 2.0}


def test_interpreter_check_names_the_environment(capsys):
    import sysconfig

    from sync_sdk.cli.main import main
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        check_interpreter()
        return
    with pytest.raises(BackendError, match="scripts/triton_env.sh"):
        check_interpreter()
    assert main(["serve", "--model", "synthetic-tiny"]) == 3  # before any model or port is touched
    assert "build/serve-venv/bin/sync-sdk serve" in capsys.readouterr().err


# ---------------------------------------------------------------------------- a real server
class Server:
    """`sync-sdk serve` in a subprocess of the serving environment, with tritonclient clients."""

    def __init__(self, log: Path, *args: str) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.log = log
        cmd = [str(SERVE_PYTHON), "-m", "sync_sdk.cli.main", "serve", "--model", "synthetic-tiny",
               "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *args]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"server did not become ready; its log:\n{self.log_tail()}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        import tritonclient.http as http
        try:
            with http.InferenceServerClient(f"127.0.0.1:{self.http_port}") as c:
                return c.is_model_ready("synchformer") and c.is_model_ready("synchformer_features")
        except Exception:  # not listening yet
            return False

    def client(self, protocol: str):
        import tritonclient.grpc as grpc
        import tritonclient.http as http
        if protocol == "http":
            return http.InferenceServerClient(f"127.0.0.1:{self.http_port}", network_timeout=120)
        return grpc.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def infer(client, model: str, inputs: dict, outputs=WINDOW_OUT) -> dict:
    """`model`'s named outputs for `inputs` (name -> array; object arrays are BYTES)."""
    from tritonclient.utils import np_to_triton_dtype
    mod = sys.modules[type(client).__module__.rsplit(".", 1)[0]]
    items = []
    for name, arr in inputs.items():
        item = mod.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else np_to_triton_dtype(arr.dtype))
        item.set_data_from_numpy(arr)
        items.append(item)
    result = client.infer(model, items)
    return {k: result.as_numpy(k) for k in outputs}


def path_input(name: str) -> dict:
    return {"path": np.array([name.encode()], dtype=object)}


def media_input(path: Path) -> dict:
    return {"media": np.array([path.read_bytes()], dtype=object)}


@pytest.fixture(scope="module")
def server(media, tmp_path_factory):
    reason = _serve_env_reason()
    if reason:
        pytest.skip(reason)
    srv = Server(tmp_path_factory.mktemp("log") / "server.log", "--media-root", str(media["root"]),
                 "--workers", "2", "--timeout", "60", "--max-request-mb", "8", "--max-seconds", "30")
    yield srv
    code = srv.stop(signal.SIGINT)
    assert code == 0, f"server exited with {code} on SIGINT; its log:\n{srv.log_tail()}"


@pytest.fixture(scope="module")
def engine():
    from sync_sdk import SyncEngine
    return SyncEngine.from_pretrained("synthetic-tiny")


def assert_same(answer: dict, res) -> None:
    np.testing.assert_allclose(answer["logits"], res.logits, atol=ATOL, rtol=0)
    np.testing.assert_allclose(answer["probabilities"], res.probs, atol=ATOL, rtol=0)
    assert int(answer["class_index"][0]) == res.class_index
    assert float(answer["offset_sec"][0]) == pytest.approx(res.offset_sec, abs=1e-3)  # refined: a fit of the logits
    assert float(answer["confidence"][0]) == pytest.approx(res.confidence, abs=ATOL)
    assert answer["flags"][0].decode() == ",".join(res.flags)
    assert float(answer["class_offset_sec"][0]) == pytest.approx(res.class_offset_sec)
    np.testing.assert_allclose(answer["offset_interval_sec"], res.offset_interval_sec or (np.nan, np.nan), atol=ATOL)


def test_ready_and_models(server):
    for protocol in ("http", "grpc"):
        with server.client(protocol) as c:
            assert c.is_server_live() and c.is_server_ready()
            assert c.is_model_ready("synchformer") and c.is_model_ready("synchformer_features")
            meta = c.get_model_metadata("synchformer")
            names = [o["name"] for o in meta["outputs"]] if protocol == "http" else [o.name for o in meta.outputs]
            assert set(names) == set(WINDOW_OUT)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_paths_match_predict(server, media, engine, protocol):
    with server.client(protocol) as c:
        for name in ("a.mp4", "sub/b.mp4", "link_in.mp4"):
            assert_same(infer(c, "synchformer", path_input(name)), engine.predict(str(media["root"] / name)))
        start = {"start_sec": np.array([0.32], np.float32)}
        assert_same(infer(c, "synchformer", {**path_input("a.mp4"), **start}),
                    engine.predict(str(media["root"] / "a.mp4"), start_sec=0.32))
        fine = {"refine": np.array([True])}
        assert_same(infer(c, "synchformer", {**path_input("a.mp4"), **fine}),
                    engine.predict(str(media["root"] / "a.mp4"), refine=True))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_media_bytes_and_arrays_match_predict(server, media, engine, protocol):
    with server.client(protocol) as c:
        path = media["root"] / "sub" / "b.mp4"
        assert_same(infer(c, "synchformer", media_input(path)), engine.predict(str(path)))
        clip = media["small"]
        assert_same(infer(c, "synchformer", _arrays(clip)),
                    engine.predict((clip.frames, clip.fps, clip.audio, clip.sample_rate)))


def test_features_match_visual_features(server, media, engine):
    with server.client("grpc") as c:
        path = media["root"] / "a.mp4"
        got = infer(c, "synchformer_features", path_input("a.mp4"), ["features"])["features"]
        np.testing.assert_allclose(got, engine.visual_features(str(path)), atol=ATOL, rtol=0)
        d = {"duration_sec": np.array([2.0], np.float32)}
        got = infer(c, "synchformer_features", {**media_input(path), **d}, ["features"])["features"]
        np.testing.assert_allclose(got, engine.visual_features(str(path), duration_sec=2.0), atol=ATOL, rtol=0)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_refuses_path_escapes(server, media, protocol):
    from tritonclient.utils import InferenceServerException
    with server.client(protocol) as c:
        for name, words in ESCAPES:
            with pytest.raises(InferenceServerException) as err:
                infer(c, "synchformer", path_input(name.format(outside=media["outside"])))
            assert words in str(err.value), str(err.value)[-500:]


def malformed_requests(mod, media) -> list:
    """InferInput lists the server must refuse: wrong dtypes, shapes, bytes and sizes."""
    def item(name, arr, dtype=None):
        from tritonclient.utils import np_to_triton_dtype
        x = mod.InferInput(name, list(arr.shape), dtype or ("BYTES" if arr.dtype == object else
                                                            np_to_triton_dtype(arr.dtype)))
        x.set_data_from_numpy(arr)
        return x

    def huge(name, arr, shape):
        x = item(name, arr)
        x.set_shape(shape)  # declares far more data than it carries
        return x

    garbage = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    mp4 = (media["root"] / "a.mp4").read_bytes()
    clip = media["clips"]["a.mp4"]
    small = np.ascontiguousarray(clip.frames[:130, ::4, ::4])
    return [
        [item("path", np.array([1], np.int32))],                                  # wrong dtype
        [item("frames", np.zeros((4, 8, 8, 3), np.float32))],                      # wrong dtype
        [item("frames", np.zeros((4, 8, 3), np.uint8))],                           # wrong rank
        [item("path", np.array([b"a.mp4", b"a.mp4"], object))],                    # wrong shape
        [item("bogus", np.array([1.0], np.float32))],                              # unknown input
        [item("media", np.array([garbage], object))],                             # garbage bytes
        [item("media", np.array([mp4[: len(mp4) // 3]], object))],                 # cut file
        [item("media", np.array([b"\x00" * (9 << 20)], object))],                  # over --max-request-mb
        [huge("frames", np.zeros((1, 1, 1, 3), np.uint8), [100000, 1000, 1000, 3])],
        [huge("audio", np.zeros(4, np.float32), [1 << 40])],
        [item("frames", small), item("fps", np.array([1.0], np.float32)),          # 130 s of frames
         item("audio", clip.audio), item("sample_rate", np.array([16000], np.int32))],
        [item("frames", clip.frames[:3]), item("fps", np.array([25.0], np.float32)),  # too short
         item("audio", clip.audio[:100]), item("sample_rate", np.array([16000], np.int32))],
        [item("path", np.array([b"a.mp4"], object)), item("start_sec", np.array([99.0], np.float32))],
        [item("path", np.array([b"a.mp4"], object)), item("media", np.array([mp4], object))],
    ]


def test_malformed_flood_then_still_correct(server, media, engine):
    import tritonclient.grpc as grpc
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException
    expected = engine.predict(str(media["root"] / "a.mp4"))

    def flood(protocol: str) -> int:
        mod, refused = (http if protocol == "http" else grpc), 0
        with server.client(protocol) as c:
            for _ in range(2):
                for items in malformed_requests(mod, media):
                    try:
                        c.infer("synchformer", items)
                    except InferenceServerException as e:
                        refused += bool(str(e))
        return refused

    def good(protocol: str) -> dict:
        with server.client(protocol) as c:
            return infer(c, "synchformer", path_input("a.mp4"))

    n = len(malformed_requests(http, media)) * 2
    with concurrent.futures.ThreadPoolExecutor(6) as pool:  # good requests among the bad ones
        floods = [pool.submit(flood, p) for p in ("http", "grpc", "http", "grpc")]
        goods = [pool.submit(good, p) for p in ("http", "grpc")]
        assert [f.result() for f in floods] == [n] * 4
        for g in goods:
            assert_same(g.result(), expected)
    assert server.proc.poll() is None
    for protocol in ("http", "grpc"):
        with server.client(protocol) as c:
            assert c.is_server_ready()
        assert_same(good(protocol), expected)


def test_deadline_no_paths_and_clean_shutdown(media, tmp_path):
    """A server without --media-root refuses paths; a request past --timeout fails and its worker is
    replaced; SIGTERM stops it with exit code 0, its worker processes gone."""
    reason = _serve_env_reason()
    if reason:
        pytest.skip(reason)
    from tritonclient.utils import InferenceServerException
    srv = Server(tmp_path / "server.log", "--workers", "1", "--timeout", "0.5")
    try:
        with srv.client("grpc") as c:
            with pytest.raises(InferenceServerException, match="started without --media-root"):
                infer(c, "synchformer", path_input("a.mp4"))
            for _ in range(2):  # the second one runs on the restarted worker
                with pytest.raises(InferenceServerException, match="0.5-s deadline"):
                    infer(c, "synchformer", media_input(media["root"] / "a.mp4"))
            with pytest.raises(InferenceServerException, match="not media that PyAV"):  # a third worker answers
                infer(c, "synchformer", {"media": np.array([b"not a video"], dtype=object)})
            assert c.is_server_ready()
        workers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == srv.proc.pid
                   and b"job_worker" in _cmdline(p)]
        assert len(workers) == 1
        started = time.monotonic()
        assert srv.stop(signal.SIGTERM) == 0, srv.log_tail()
        assert time.monotonic() - started < 30
        assert "stopping" in srv.log.read_text()
        time.sleep(0.5)
        assert not any((w / "cmdline").exists() and _cmdline(w) for w in workers)
    finally:
        srv.stop(signal.SIGKILL)


def _parent(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


def test_clients_cannot_load_models(server, tmp_path):
    """PyTriton's own setup lets a client load a Python model with its code; this server refuses it."""
    import base64
    import json
    import urllib.error
    import urllib.request
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()\nclass TritonPythonModel:\n    def execute(self, requests):\n" \
           "        return []\n"
    body = {"parameters": {"config": json.dumps({"backend": "python", "input": [], "output": []}),
                           "file:1/model.py": base64.b64encode(code.encode()).decode()}}
    for path, data in [("/v2/repository/models/evil/load", body), ("/v2/repository/models/synchformer/unload", {})]:
        request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", json.dumps(data).encode(),
                                         method="POST")
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(request, timeout=30)
    assert not marker.exists()
    with server.client("grpc") as c:
        with pytest.raises(Exception, match="restricted"):
            c.unload_model("synchformer")
        with pytest.raises(Exception, match="restricted"):
            c.get_system_shared_memory_status()
        assert c.is_model_ready("synchformer")


def test_synchronizability_model_declares_its_output():
    reason = _serve_env_reason()
    if reason:
        pytest.skip(reason)
    from sync_sdk.serving.triton_server import model_io
    (name, job, inputs, outputs), (fname, _, _, fout) = model_io(
        {"variant": "synchronizability", "num_classes": 2, "v_dim": 768}, "m")
    assert (name, job, fname) == ("m", "predict", "m_features")
    assert [o.name for o in outputs] == ["synchronizability"]
    assert fout[0].shape == (-1, 768)
