"""A device played on the master side of a real pty pair (shared by the printer and reader).

The probe opens `path` (the slave) with pyserial exactly as it would open /dev/ttyS1. The
device runs in a daemon thread: it reads what the probe wrote, answers through `send()`,
and can misbehave on the line (`stream` random bytes, go silent, hang up mid-read).
The module name starts with "_" so the emulator scanner does not take it for an emulator.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import select
import threading
import tty
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from probes.contract.errors import UsageError

# <linux/fs.h>: FS_IOC_GETFLAGS / FS_IOC_SETFLAGS and the immutable attribute (chattr +i).
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10
TICK_S = 0.01


class PtyDevice:
    def __init__(self) -> None:
        self._master, self._slave = open_pty()
        # Raw from the start: no echo, no CR/LF translation, whatever the probe sets later.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.received = bytearray()
        self.line_fault: str | None = None
        self.stream_random = False
        self._out = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._hang_up = False
        self._thread = threading.Thread(target=self._loop, name=f"emulator-{self.path}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._close_fds()

    def on_data(self, data: bytes) -> None:
        """Bytes the probe wrote; subclasses answer with send()."""
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        with self._lock:
            self._out += data

    def set_line_fault(self, fault: str | None) -> None:
        """Misbehave on the line from now on ("random" streams random bytes; the other
        faults are the subclass's to act on), forgetting any queued output."""
        self.line_fault = fault
        self.stream_random = fault == "random"
        self.clear_output()

    def clear_output(self) -> None:
        """Forget queued output (a huge reply still being written) so the next exchange is clean."""
        with self._lock:
            self._out.clear()

    def hang_up(self) -> None:
        """Close both ends from inside the device thread: the device is gone, mid-read if asked mid-read."""
        self._hang_up = True

    def _loop(self) -> None:
        while not self._stop.is_set() and not self._hang_up:
            with self._lock:
                pending = bool(self._out)
            ready_r, ready_w, _ = select.select([self._master], [self._master] if pending else [], [], TICK_S)
            if ready_r:
                self._receive()
            if ready_w:
                self._transmit()
            if self.stream_random:
                self._write_some(os.urandom(64))
        if self._hang_up:
            self._transmit()  # what was sent before hanging up still goes out: a reply cut short
            self._close_fds()

    def _receive(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        self.received += data
        self.on_data(data)

    def _transmit(self) -> None:
        with self._lock:
            sent = self._write_some(bytes(self._out[:4096]))
            del self._out[:sent]

    def _write_some(self, data: bytes) -> int:
        try:
            return os.write(self._master, data)
        except (BlockingIOError, OSError):
            return 0  # the slave's input queue is full: a real line would drop or hold it too

    def _close_fds(self) -> None:
        for attr in ("_master", "_slave"):
            fd = getattr(self, attr)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, attr, -1)


def open_pty() -> tuple[int, int]:
    """A pty pair, or a UsageError that says what is missing: a container or chroot without devpts
    mounted on /dev/pts has /dev/ptmx but no slave to open."""
    try:
        master, slave = os.openpty()
    except OSError as exc:
        raise UsageError(
            f"the simulated terminal needs pseudo-terminals and cannot open one ({exc.strerror or exc}): "
            "mount devpts on /dev/pts (mount -t devpts devpts /dev/pts), or run where it is mounted"
        ) from None
    try:
        os.ttyname(slave)
    except OSError as exc:
        os.close(master)
        os.close(slave)
        raise UsageError(f"the simulated terminal's pty has no name under /dev/pts ({exc.strerror}): mount devpts there") from None
    return master, slave


def missing_port(workdir: Path) -> str:
    """A device path that does not exist (the device is unplugged)."""
    return str(workdir / "ttyGONE0")


@contextlib.contextmanager
def forbidden_port(workdir: Path) -> Iterator[str]:
    """A device path that exists but that this process may not open read-write.

    Mode 000 stops an ordinary user (EACCES). Root ignores modes, so as root the file is also
    made immutable (chattr +i), which makes the kernel refuse a read-write open with EPERM even
    to root (needs CAP_LINUX_IMMUTABLE and a filesystem with the attribute: ext4, tmpfs >= 6.0).
    The flag is cleared on leaving (Ctrl-C included) so the work area can be removed; only a
    SIGKILL in between leaves the file behind (`chattr -i` it by hand).
    """
    path = workdir / "ttyLOCKED0"
    path.touch(mode=0o000)
    path.chmod(0o000)
    immutable = os.geteuid() == 0
    if immutable:
        try:
            set_immutable(path, True)
        except OSError as exc:
            raise UsageError(f"cannot simulate a port root may not open here (chattr +i on {path}: {exc})") from exc
    try:
        yield str(path)
    finally:
        if immutable:
            set_immutable(path, False)


def set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
    finally:
        os.close(fd)
