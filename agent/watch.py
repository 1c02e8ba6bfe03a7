"""Wait for changes to files without busy polling: inotify where the kernel has it
(through libc, the standard library has no binding), else a slow stat poll.

Directories are watched rather than files, so rotation (rename + create) and
truncation are seen like any other write.
"""

from __future__ import annotations

import ctypes
import os
import select
from collections.abc import Iterable
from pathlib import Path

# <sys/inotify.h>
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x002, 0x004, 0x008
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x040, 0x080, 0x100, 0x200
WATCH_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE


class DirectoryWatcher:
    """`wait(timeout)` returns when something changed in a watched directory (True),
    or when the timeout passed (False). Without inotify it always waits the timeout
    (capped at `poll_seconds`) and reports a possible change."""

    def __init__(self, directories: Iterable[Path], poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self.fd = -1
        self.libc = None
        self.wake_r, self.wake_w = os.pipe()
        self.unwatched: list[Path] = []
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter runs on
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        self.fd, self.libc = fd, libc
        for directory in {d.resolve() for d in directories}:
            # A directory that is not there yet (the payment app creates it) is not made
            # here: its files are polled every `poll_seconds` until a restart or reload.
            if libc.inotify_add_watch(fd, os.fsencode(directory), WATCH_MASK) < 0:
                self.unwatched.append(directory)

    @property
    def uses_inotify(self) -> bool:
        return self.fd >= 0

    def wait(self, timeout: float) -> bool:
        if self.fd < 0:
            select.select([self.wake_r], [], [], min(timeout, self.poll_seconds))
            return True
        if self.unwatched:
            timeout = min(timeout, self.poll_seconds)
        ready, _, _ = select.select([self.fd, self.wake_r], [], [], timeout)
        if not ready:
            return False
        if self.wake_r in ready:
            return True
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def interrupt(self) -> None:
        """Makes a `wait` in another thread return now."""
        os.write(self.wake_w, b"x")

    def close(self) -> None:
        for fd in (self.fd, self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)
        self.fd = self.wake_r = self.wake_w = -1
