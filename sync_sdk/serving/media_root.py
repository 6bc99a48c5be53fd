"""Media paths from clients, confined to one folder (`sync-sdk serve --media-root`).

A server that opens the paths its clients name can be made to read any file it can. `MediaRoot.open`
takes a relative name and gives an open file descriptor of a regular file inside the root, or an
InputError saying why not: absolute names, `..` components, symlinks whose target leaves the root,
anything that is not a regular file (a folder, /dev/zero, a FIFO, a socket) and missing files are
refused. The check is made on the opened descriptor (its /proc/self/fd link), so a path swapped for a
symlink between the check and the open cannot escape. Linux only (/proc).

    root = MediaRoot("/srv/media")
    with root.open("clips/a.mp4") as path:   # "/proc/self/fd/N": decoders read the checked file
        engine.predict(path)
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator

from sync_sdk.errors import InputError, MediaNotFoundError

MAX_NAME_BYTES = 4096  # PATH_MAX
KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_name(name: str) -> str:
    """`name` if it is a relative path without `..` components; else InputError."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name.encode()) > MAX_NAME_BYTES:
        raise InputError(f"media path {name!r}: expected a non-empty relative path of at most "
                         f"{MAX_NAME_BYTES} bytes without NUL characters")
    if os.path.isabs(name):
        raise InputError(f"media path {name!r} is absolute; expected a path relative to the server's media root")
    if ".." in Path(name).parts:
        raise InputError(f"media path {name!r} contains '..'; expected a path inside the server's media root")
    return name


class MediaRoot:
    """The folder whose regular files clients may name (relative to it)."""

    def __init__(self, root: str | os.PathLike) -> None:
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            raise InputError(f"--media-root {root}: not a folder; expected the folder whose media clients may name")
        self.root = real

    def __repr__(self) -> str:
        return f"MediaRoot({str(self.root)!r})"

    def _inside(self, path: str) -> bool:
        return os.path.commonpath([str(self.root), path]) == str(self.root)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[str]:
        """Context giving "/proc/self/fd/N" of `name` opened read-only: a regular file inside the root
        (symlinks inside the root are followed). InputError (MediaNotFoundError when missing) otherwise."""
        real = os.path.realpath(self.root / check_name(name))
        if not self._inside(real):
            raise InputError(f"media path {name!r} leads outside the server's media root (through a symlink)")
        try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: no symlink swapped in
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MediaNotFoundError(f"media path {name!r}: no such file in the server's media root") from None
        except OSError as e:
            raise InputError(f"media path {name!r} cannot be opened ({e.strerror}); expected a readable "
                             "regular file in the server's media root") from None
        try:
            mode = os.fstat(fd).st_mode
            for test, kind in KINDS:
                if test(mode):
                    raise InputError(f"media path {name!r} is {kind}; expected a regular file")
            if not stat.S_ISREG(mode):
                raise InputError(f"media path {name!r} is not a regular file")
            link = f"/proc/self/fd/{fd}"
            if not self._inside(os.readlink(link)):  # what was opened, whatever happened to the path meanwhile
                raise InputError(f"media path {name!r} leads outside the server's media root")
            yield link
        finally:
            os.close(fd)
