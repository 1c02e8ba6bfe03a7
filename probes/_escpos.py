"""Talking to an ESC/POS receipt printer: open it, ask `DLE EOT n`, write bytes.

Two transports behind one small interface, so the probe and any other code (a receipt of
the diagnosis, `posdiag probe --print-test`) talk to a printer the same way:

    serial  any pyserial URL (/dev/ttyS1, a pty, socket://host:9100)
    usblp   a Linux USB printer-class node such as /dev/usb/lp0

Errors are LineError (see probes._serial_line) whatever the transport.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import select
import time
from collections.abc import Iterator
from typing import Protocol

from probes._serial_line import Line, LineError, open_error

DLE_EOT = b"\x10\x04"
# <linux/lp.h>: _IOR-less legacy number; the kernel writes the port status byte to an int.
LPGETSTATUS = 0x060B
REPLY_LIMIT = 64


class PrinterSettingsLike(Protocol):
    transport: str
    port: str
    baud_rate: int
    rtscts: bool
    xonxoff: bool


class PrinterLink(Protocol):
    def write(self, data: bytes, deadline: float) -> None: ...

    def query(self, n: int, deadline: float) -> bytes:
        """Send DLE EOT n; the reply bytes (b"" if nothing came before the deadline)."""
        ...

    def port_status(self) -> int | None:
        """The parallel-port status byte (usblp LPGETSTATUS), None where there is none."""
        ...


class SerialLink:
    def __init__(self, line: Line) -> None:
        self.line = line

    def write(self, data: bytes, deadline: float) -> None:
        self.line.write(data, deadline)

    def query(self, n: int, deadline: float) -> bytes:
        self.line.discard_input()
        self.line.write(DLE_EOT + bytes([n]), deadline)
        first = self.line.read(1, deadline)
        # Anything behind the one status byte means the line carries more than a printer's answer.
        return first + self.line.read_available(REPLY_LIMIT) if first else b""

    def port_status(self) -> int | None:
        return None


class UsbLpLink:
    """usblp: read() answers only on bidirectional interfaces; LPGETSTATUS works on all."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise open_error(path, exc) from exc

    def close(self) -> None:
        os.close(self.fd)

    def write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            if not select.select([], [self.fd], [], max(0.0, deadline - time.monotonic()))[1]:
                raise LineError("lost", f"write to {self.path} did not complete before the deadline")
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise LineError("lost", f"write to {self.path} failed: {exc}") from exc

    def query(self, n: int, deadline: float) -> bytes:
        self._drain()
        self.write(DLE_EOT + bytes([n]), deadline)
        if not select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return b""
        try:
            reply = os.read(self.fd, REPLY_LIMIT)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise LineError("lost", f"{self.path}: connection lost ({exc})") from exc
        if not reply:
            raise LineError("lost", f"{self.path}: device disconnected")
        return reply

    def port_status(self) -> int | None:
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self.fd, LPGETSTATUS, buf, True)
        except OSError:
            return None  # not a usblp node, or the driver refuses: no status to fall back on
        return buf[0] & 0xFF

    def _drain(self) -> None:
        for _ in range(16):
            try:
                if not os.read(self.fd, 4096):
                    return
            except BlockingIOError:
                return
            except OSError as exc:
                raise LineError("lost", f"{self.path}: connection lost ({exc})") from exc


@contextlib.contextmanager
def open_printer(settings: PrinterSettingsLike) -> Iterator[PrinterLink]:
    """The printer named by settings, closed on leaving. Raises LineError."""
    if settings.transport == "usblp":
        link = UsbLpLink(settings.port)
        try:
            yield link
        finally:
            link.close()
        return
    with Line(settings.port, settings.baud_rate, settings.rtscts, settings.xonxoff) as line:
        yield SerialLink(line)
