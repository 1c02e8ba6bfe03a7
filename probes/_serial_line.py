"""A serial line opened with pyserial's serial_for_url, read against a deadline.

This is the one place where pyserial's (and the OS's) errors are translated:

    DeviceError
    └── LineError       .kind: "absent" (no such port), "denied" (cannot be opened: EACCES/EPERM),
                        "lost" (an error after opening: unplugged, pty closed, I/O error)

The module name starts with "_" so the probe scanner does not take it for a probe.
"""

from __future__ import annotations

import errno
import os
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

import serial

from probes.contract.errors import DeviceError
from probes.contract.records import Finding, Observation, Status

T = TypeVar("T")
LineErrorKind = Literal["absent", "denied", "lost"]

DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
# termios.error is not an OSError; pyserial lets it through from tcflush/tcdrain on a dead pty.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)


class LineError(DeviceError):
    def __init__(self, kind: LineErrorKind, message: str) -> None:
        self.kind: LineErrorKind = kind
        super().__init__(message)


def as_observation(exc: LineError, prefix: str, port: str) -> Observation:
    """A line error as the probe's finding: `<prefix>.absent` (status absent),
    `.permission_denied` or `.no_response`."""
    if exc.kind == "absent":
        return Observation([Finding.fail(f"{prefix}.absent", str(exc), port=port)], status=Status.ABSENT)
    if exc.kind == "denied":
        return Observation([Finding.fail(f"{prefix}.permission_denied", str(exc), port=port)])
    return Observation([Finding.fail(f"{prefix}.no_response", str(exc), port=port)])


def lock_holder(path: Path) -> str | None:
    """Who holds a UUCP-style lock file (LCK..ttyUSB2, as pppd and dialers leave them): "pid N",
    "an unknown process" when no pid can be read, or None when there is no lock or its pid
    no longer runs (a stale lock)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return "an unknown process"
    words = data.decode("ascii", "replace").split()
    if words and words[0].isdigit():
        pid = int(words[0])
    elif len(data) == 4:  # the old binary form: the pid as a native int
        pid = int.from_bytes(data, sys.byteorder)
    else:
        return "an unknown process"
    return f"pid {pid}" if os.path.exists(f"/proc/{pid}") else None


def port_lock(port: str, lock_dir: str) -> Path | None:
    """The lock file a dialer would hold for a device path; None for a pyserial URL."""
    if not lock_dir or "://" in port:
        return None
    return Path(lock_dir) / f"LCK..{Path(port).name}"


def error_errno(exc: BaseException) -> int | None:
    """pyserial keeps the errno on the exception for device files but only on the cause for URLs."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        code = getattr(candidate, "errno", None)
        if isinstance(code, int):
            return code
    return None


def open_error(url: str, exc: BaseException) -> LineError:
    code = error_errno(exc)
    if code in DENIED_ERRNOS:
        return LineError("denied", f"cannot open {url}: permission denied ({errno.errorcode[code]})")
    # ENOENT, ENODEV, ENXIO, a refused socket, a bad URL, EIO from a dead pty, "not a tty":
    # in every case there is no usable device at that address.
    return LineError("absent", f"cannot open {url}: {exc}")


class Line:
    """An open port; every read and write is bounded by an absolute time.monotonic() deadline."""

    def __init__(self, url: str, baud_rate: int, rtscts: bool, xonxoff: bool) -> None:
        self.url = url
        try:
            self._port = serial.serial_for_url(
                url, baudrate=baud_rate, rtscts=rtscts, xonxoff=xonxoff, timeout=0, write_timeout=0.5
            )
        except (*PORT_ERRORS, ValueError) as exc:
            raise open_error(url, exc) from exc

    def __enter__(self) -> Line:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._port.close()
        except PORT_ERRORS:
            pass  # closing a port whose device vanished: nothing left to release

    def discard_input(self) -> None:
        """Drop bytes that arrived before our question (a previous reply, line noise)."""
        self._call(self._port.reset_input_buffer)

    def write(self, data: bytes, deadline: float) -> None:
        # No flush(): tcdrain has no timeout and would hang while flow control holds the line.
        try:
            self._port.write_timeout = max(0.01, deadline - time.monotonic())
            self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise LineError("lost", f"write to {self.url} did not complete (flow control held?)") from exc
        except PORT_ERRORS as exc:
            raise LineError("lost", f"write to {self.url} failed: connection lost ({exc})") from exc

    def read(self, size: int, deadline: float) -> bytes:
        """Up to `size` bytes; fewer (maybe none) when the deadline passes first."""
        return self._call(self._read, size, max(0.0, deadline - time.monotonic()))

    def read_available(self, limit: int) -> bytes:
        """Whatever is already waiting, without waiting for more."""
        return self._call(self._read, limit, 0.0)

    def _read(self, size: int, timeout: float) -> bytes:
        self._port.timeout = timeout  # the setter reconfigures the port: it can fail on a dead line too
        return self._port.read(size)

    def _call(self, fn: Callable[..., T], *args: float) -> T:
        try:
            return fn(*args)
        except PORT_ERRORS as exc:
            raise LineError("lost", f"{self.url}: connection lost ({exc})") from exc
