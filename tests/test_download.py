"""download_checkpoint against a local HTTP server on 127.0.0.1 serving a generated file."""
import hashlib
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from sync_sdk.errors import CheckpointError, DownloadError
from sync_sdk.weights import download
from sync_sdk.weights.download import DEFAULT_CHECKPOINT, OFFICIAL_CHECKPOINTS, download_checkpoint

DATA = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 123)
MD5 = hashlib.md5(DATA).hexdigest()
ID = DEFAULT_CHECKPOINT
PATH = f"/models/{ID}/{ID}.pt"


class _Handler(BaseHTTPRequestHandler):
    """Serves DATA at PATH; `server.mode` picks a fault: truncate, truncate-once, no-range, slow, gated (a
    third of the body, then the rest once `server.gate` is set)."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if self.path != PATH:
            self.send_error(404)
            return
        if srv.mode == "slow":
            time.sleep(1.0)
        start, rng = 0, self.headers.get("Range")
        if rng and srv.mode != "no-range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(DATA):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        else:
            self.send_response(200)
        body = DATA[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.mode == "truncate" or (srv.mode == "truncate-once" and len(srv.requests) == 1)
        if srv.mode == "gated":
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            srv.gate.wait(timeout=30)
            body = body[len(body) // 3:]
        self.wfile.write(body[: len(body) // 3] if cut else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads, srv.block_on_close = True, False
    srv.mode, srv.requests, srv.gate = "ok", [], threading.Event()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/models"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _get(server, tmp_path, **kw):
    kw = {"base_url": server.base, "md5": MD5, "progress": False, "retries": 0} | kw
    return download_checkpoint(ID, tmp_path, **kw)


def _final(tmp_path):
    return tmp_path / "checkpoints" / f"{ID}.pt"


def _part(tmp_path):
    return tmp_path / "checkpoints" / f"{ID}.pt.part"


def test_registry_has_the_published_ids():
    assert set(OFFICIAL_CHECKPOINTS) == {"23-12-23T18-33-57", "24-01-02T10-00-53", "24-01-04T16-39-21",
                                         "24-01-22T20-34-52"}
    assert OFFICIAL_CHECKPOINTS["24-01-22T20-34-52"].variant == "synchronizability"
    assert OFFICIAL_CHECKPOINTS[ID].md5_prefix == "54037d2"
    assert OFFICIAL_CHECKPOINTS[ID].url() == ("https://a3s.fi/swift/v1/AUTH_a235c0f452d648828f745589cde1219a/sync/"
                                              "sync_models/24-01-04T16-39-21/24-01-04T16-39-21.pt")


def test_good_download_then_cached(server, tmp_path):
    path = _get(server, tmp_path, progress=True)
    assert path == _final(tmp_path) and path.read_bytes() == DATA
    assert server.requests == [(PATH, None)] and not _part(tmp_path).exists()
    assert _get(server, tmp_path) == path
    assert len(server.requests) == 1  # the second call made no request


def test_environment_sets_cache_and_base_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNC_SDK_CACHE", str(tmp_path))
    monkeypatch.setenv("SYNC_SDK_CHECKPOINT_BASE_URL", server.base)
    assert download_checkpoint(ID, md5=MD5, progress=False) == _final(tmp_path)


def test_published_md5_is_checked(server, tmp_path):
    """Without an override the registry's prefix applies; the generated file does not match it."""
    with pytest.raises(DownloadError, match=f"{server.base}{PATH.removeprefix('/models')}.*md5 {MD5}.*54037d2"):
        _get(server, tmp_path, md5=None)
    assert not _final(tmp_path).exists() and not _part(tmp_path).exists()


def test_wrong_md5(server, tmp_path):
    with pytest.raises(DownloadError, match="md5.*synthetic-tiny"):
        _get(server, tmp_path, md5="0123abc")
    assert not _final(tmp_path).exists() and not _part(tmp_path).exists()


def test_truncated_body_fails_after_resume_attempts(server, tmp_path):
    server.mode = "truncate"
    with pytest.raises(DownloadError, match=r"closed after \d+ of 3145851 bytes.*synthetic-tiny"):
        _get(server, tmp_path, retries=1)
    assert not _final(tmp_path).exists()
    assert 0 < _part(tmp_path).stat().st_size < len(DATA)  # kept for a later resume
    assert server.requests[1][1] == f"bytes={len(DATA) // 3}-"


def test_truncated_body_resumes_on_retry(server, tmp_path):
    server.mode = "truncate-once"
    assert _get(server, tmp_path, retries=1).read_bytes() == DATA
    assert [r for _, r in server.requests] == [None, f"bytes={len(DATA) // 3}-"]


def test_existing_part_is_resumed_with_range(server, tmp_path):
    _part(tmp_path).parent.mkdir(parents=True)
    _part(tmp_path).write_bytes(DATA[:1000])
    assert _get(server, tmp_path).read_bytes() == DATA
    assert server.requests == [(PATH, "bytes=1000-")] and not _part(tmp_path).exists()


def test_stale_part_is_replaced_by_a_clean_retry(server, tmp_path):
    _part(tmp_path).parent.mkdir(parents=True)
    _part(tmp_path).write_bytes(b"x" * 1000)  # not the start of DATA: the resumed md5 fails
    assert _get(server, tmp_path, retries=1).read_bytes() == DATA
    assert [r for _, r in server.requests] == ["bytes=1000-", None]


def test_server_without_range_support_restarts(server, tmp_path):
    server.mode = "no-range"
    _part(tmp_path).parent.mkdir(parents=True)
    _part(tmp_path).write_bytes(b"x" * 1000)
    assert _get(server, tmp_path).read_bytes() == DATA


def test_not_found(server, tmp_path):
    with pytest.raises(DownloadError, match=f"{server.base}/missing/{ID}.pt: HTTP 404.*synthetic-tiny"):
        download_checkpoint(f"{server.base}/missing/{ID}.pt", tmp_path, progress=False, retries=2)
    assert len(server.requests) == 1  # a 404 is final: no retries
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_timeout(server, tmp_path):
    server.mode = "slow"
    with pytest.raises(DownloadError, match="timed out"):
        _get(server, tmp_path, timeout=0.2)
    assert not _final(tmp_path).exists()


def test_any_address_downloads_into_the_cache(server, tmp_path):
    path = download_checkpoint(server.base + PATH.removeprefix("/models"), tmp_path, progress=False, md5=MD5)
    assert path.read_bytes() == DATA and path.name.endswith(f"-{ID}.pt")


def test_unknown_id():
    with pytest.raises(CheckpointError, match="unknown checkpoint id 'nope'.*24-01-04T16-39-21"):
        download_checkpoint("nope")


# --- one download per file across processes ----------------------------------------------------------
def _files(tmp_path):
    return sorted(p.name for p in (tmp_path / "checkpoints").iterdir())


def _wait_for(condition, seconds=30.0):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _process(server, tmp_path):
    """A separate Python process that downloads ID into tmp_path, printing 'ready' first, then the path."""
    code = ("from sync_sdk.weights.download import download_checkpoint\nprint('ready', flush=True)\n"
            f"print(download_checkpoint({ID!r}, {str(tmp_path)!r}, progress=False, base_url={server.base!r}, "
            f"md5={MD5!r}, retries=0))")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_download_the_file_once(server, tmp_path):
    """The second process starts while the first is mid-body: it waits on the lock (sending no request),
    then returns the file the first one finished and checked."""
    server.mode = "gated"
    first = _process(server, tmp_path)
    _wait_for(lambda: len(server.requests) == 1 and _part(tmp_path).exists())
    second = _process(server, tmp_path)
    assert second.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    assert second.poll() is None and len(server.requests) == 1  # waiting, not downloading
    assert _files(tmp_path) == [f"{ID}.pt.lock", f"{ID}.pt.part"]
    server.gate.set()
    for proc in (first, second):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.split()[-1] == str(_final(tmp_path))
    assert hashlib.md5(_final(tmp_path).read_bytes()).hexdigest() == MD5
    assert server.requests == [(PATH, None)]
    assert _files(tmp_path) == [f"{ID}.pt"]  # no .part, no .lock


def test_two_processes_started_together(server, tmp_path):
    server.mode = "slow"  # 1 s before the answer: both are inside download_checkpoint by then
    procs = [_process(server, tmp_path) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.split() == ["ready", str(_final(tmp_path))]
    assert _final(tmp_path).read_bytes() == DATA and len(server.requests) == 1
    assert _files(tmp_path) == [f"{ID}.pt"]


def test_waiting_on_a_stalled_download_times_out(server, tmp_path):
    dest = _final(tmp_path)
    dest.parent.mkdir(parents=True)
    with download._download_lock(dest, 1.0, ID):  # held as another process would: flock per open file
        start = time.monotonic()
        with pytest.raises(DownloadError, match=f"another process holds .*{ID}.pt.lock.*no progress for 0.3 s"):
            _get(server, tmp_path, lock_timeout=0.3)
        assert time.monotonic() - start < 5
    assert server.requests == [] and _files(tmp_path) == []


def test_lock_file_fallback_without_fcntl(server, tmp_path, monkeypatch):
    """Without fcntl the lock is an exclusively created file: a fresh one is waited on, a stale one
    (no change for _STALE_LOCK_S) is taken over."""
    monkeypatch.setattr(download, "fcntl", None)
    lock = tmp_path / "checkpoints" / f"{ID}.pt.lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    with pytest.raises(DownloadError, match="no progress for 0.3 s"):
        _get(server, tmp_path, lock_timeout=0.3)
    old = time.time() - download._STALE_LOCK_S - 10
    os.utime(lock, (old, old))
    assert _get(server, tmp_path, lock_timeout=5).read_bytes() == DATA
    assert _files(tmp_path) == [f"{ID}.pt"] and len(server.requests) == 1
