"""Published Synchformer checkpoints and a verified, resumable download into a cache directory.

`download_checkpoint(id)` fetches `<base>/<id>/<id>.pt` into `<cache>/checkpoints/<id>.pt`: the body
goes to `<id>.pt.part` (resumed with an HTTP Range request when a `.part` is already there), its md5
is checked against the published prefix, and only then is it renamed to the final name, so a partial
or corrupt file never appears there. One process at a time downloads a file: it holds `<id>.pt.lock`
(fcntl.flock; without fcntl an exclusively created lock file), and a second one waits, then finds
the finished file. Cache: `cache_dir`, else $SYNC_SDK_CACHE, else ~/.cache/sync_sdk.
Base address: `base_url`, else $SYNC_SDK_CHECKPOINT_BASE_URL, else the official server.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: an exclusively created lock file instead (_create_lock)
    fcntl = None

from sync_sdk.errors import CheckpointError, DownloadError
from sync_sdk.version import __version__

BASE_URL = "https://a3s.fi/swift/v1/AUTH_a235c0f452d648828f745589cde1219a/sync/sync_models"
CACHE_ENV = "SYNC_SDK_CACHE"
BASE_URL_ENV = "SYNC_SDK_CHECKPOINT_BASE_URL"
OFFLINE_HINT = ("check the network (or proxy), or download the file yourself and pass its path; "
                "the bundled model 'synthetic-tiny' works offline")
_CHUNK = 1 << 20
_LOCK_POLL_S = 0.2
_STALE_LOCK_S = 300.0  # without fcntl: a lock whose download made no progress this long is taken over


@dataclass(frozen=True)
class OfficialCheckpoint:
    """A published checkpoint: id, model variant, training data, md5 prefix from the official README."""

    id: str
    variant: str
    train_data: str
    md5_prefix: str

    def url(self, base_url: str | None = None) -> str:
        base = base_url or os.environ.get(BASE_URL_ENV) or BASE_URL
        return f"{base.rstrip('/')}/{self.id}/{self.id}.pt"


OFFICIAL_CHECKPOINTS = {c.id: c for c in (
    OfficialCheckpoint("23-12-23T18-33-57", "sync", "LRS3 ('Full Scene')", "4415276"),
    OfficialCheckpoint("24-01-02T10-00-53", "sync", "VGGSound", "19592ed"),
    OfficialCheckpoint("24-01-04T16-39-21", "sync", "AudioSet", "54037d2"),
    OfficialCheckpoint("24-01-22T20-34-52", "synchronizability", "AudioSet", "b1cb346"),
)}
DEFAULT_CHECKPOINT = "24-01-04T16-39-21"


class _Retry(Exception):
    """A transient failure: the next attempt may resume or start over."""


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sync_sdk")


def download_checkpoint(id_or_url: str, cache_dir: str | os.PathLike | None = None, progress: bool = True, *,
                        base_url: str | None = None, md5: str | None = None, timeout: float = 60.0,
                        retries: int = 3, lock_timeout: float = 600.0) -> Path:
    """Path of the cached checkpoint, downloading it first when absent (no request when cached).

    id_or_url: an id of OFFICIAL_CHECKPOINTS or an http(s) address. md5: expected md5 hex digest or a
    prefix of it (default: the registry's prefix; none for a bare address). timeout: seconds per
    connect/read. retries: extra attempts after a network failure or truncated body (each resumes).
    lock_timeout: seconds to wait while another process's download of the same file makes no progress.
    Raises DownloadError (saying the address) when every attempt fails, the md5 differs or the wait ends.
    """
    if id_or_url in OFFICIAL_CHECKPOINTS:
        info = OFFICIAL_CHECKPOINTS[id_or_url]
        url, name, md5 = info.url(base_url), f"{info.id}.pt", md5 or info.md5_prefix
    elif id_or_url.startswith(("http://", "https://")):
        url = id_or_url
        base_name = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or "checkpoint"
        name = f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base_name}"
    else:
        raise CheckpointError(f"unknown checkpoint id {id_or_url!r}; known ids: {', '.join(OFFICIAL_CHECKPOINTS)} "
                              "(or pass an http(s) address or a local file)")
    dest = Path(cache_dir or default_cache_dir()) / "checkpoints" / name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _download_lock(dest, lock_timeout, id_or_url):
        if dest.is_file():  # another process finished it while this one waited
            return dest
        return _download(url, dest, id_or_url, md5, timeout, retries, progress)


def _download(url: str, dest: Path, label: str, md5: str | None, timeout: float, retries: int,
              progress: bool) -> Path:
    """Fetch `url` into `dest` through `<dest>.part` (the caller holds the lock)."""
    part = _part(dest)
    reason = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.5 * attempt, 5.0))
        try:
            resumed = _fetch(url, part, timeout, progress, label)
        except _Retry as e:
            reason = str(e)
            continue
        digest = _md5(part)
        if md5 and not digest.startswith(md5.lower()):
            part.unlink()
            reason = f"md5 {digest} does not match the expected {md5}"
            if resumed:  # the old .part may have been stale: start over once more
                continue
            break
        os.replace(part, dest)
        return dest
    raise DownloadError(f"could not download {label} from {url}: {reason}; {OFFLINE_HINT}")


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


@contextlib.contextmanager
def _download_lock(dest: Path, timeout: float, label: str) -> Iterator[None]:
    """Hold `<dest>.lock` (removed on release); wait while another holder's `.part` grows, for at most
    `timeout` seconds without growth."""
    lock = dest.with_name(dest.name + ".lock")
    seen, deadline = None, time.monotonic() + timeout
    while (fd := _flock(lock) if fcntl else _create_lock(lock)) is None:
        size = _part(dest).stat().st_size if _part(dest).exists() else None
        if size != seen:
            seen, deadline = size, time.monotonic() + timeout
        elif time.monotonic() > deadline:
            raise DownloadError(f"could not download {label}: another process holds {lock} and its download into "
                                f"{_part(dest)} made no progress for {timeout:g} s; wait for it, pass a larger "
                                "lock_timeout, or delete the lock file if no other process is downloading")
        time.sleep(_LOCK_POLL_S)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before closing: a waiter that then locks the old file sees it is gone
        if fd >= 0:
            os.close(fd)


def _flock(lock: Path) -> int | None:
    """A descriptor holding flock(LOCK_EX) on `lock`, or None while another process holds it."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(lock)):  # not a file its last holder has removed
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def _create_lock(lock: Path) -> int | None:
    """Without fcntl: -1 (held, no descriptor) once `lock` is created exclusively, else None; a lock
    whose download (lock or .part file) has not changed for _STALE_LOCK_S is removed first."""
    try:
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return -1
    except FileExistsError:
        part = lock.with_name(lock.name.removesuffix(".lock") + ".part")
        with contextlib.suppress(OSError, ValueError):
            if time.time() - max(p.stat().st_mtime for p in (lock, part) if p.exists()) > _STALE_LOCK_S:
                lock.unlink()
        return None


def _fetch(url: str, part: Path, timeout: float, progress: bool, label: str) -> bool:
    """Download `url` into `part`, resuming from its current size; True when it appended to old bytes."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"sync-sdk/{__version__}"} | ({"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range does not fit the file: restart from zero
            part.unlink()
            raise _Retry("the server refused to resume; starting over") from e
        if 400 <= e.code < 500:
            raise DownloadError(f"could not download {label} from {url}: HTTP {e.code} {e.reason}; "
                                f"{OFFLINE_HINT}") from e
        raise _Retry(f"HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise _Retry(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from e
    with resp:
        if resp.status == 206 and (not have or _range_start(resp) != have):
            part.unlink(missing_ok=True)
            raise _Retry("the server answered a range we did not ask for; starting over")
        start = have if resp.status == 206 else 0  # a 200 answer is the whole file
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        got = 0
        try:
            with open(part, "ab" if start else "wb") as f, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=label, disable=not progress, leave=False) as bar:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except OSError as e:  # timeouts and resets while reading; the bytes so far stay in .part
            raise _Retry(f"{type(e).__name__} after {start + got} bytes: {e}") from e
    if total is not None and start + got < total:
        raise _Retry(f"the connection closed after {start + got} of {total} bytes")
    return start > 0


def _range_start(resp) -> int | None:
    """First byte of a `Content-Range: bytes a-b/n` answer, or None."""
    value = resp.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0]) if value.startswith("bytes ") else None
    except (IndexError, ValueError):
        return None


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
