"""An ESC/POS receipt printer on a pty: answers `DLE EOT n` with the status byte a real one would.

Everything else written to it is kept in `printed` (a page sent by --print-test lands there).
Status bytes follow the Epson DLE EOT table (../shared/DOMAIN.md section 2): base 0x12, and
    n=1  0x08 offline, 0x20 waiting for online recovery
    n=2  0x04 cover open, 0x20 stopped by paper end, 0x40 error occurred
    n=3  0x08 auto-cutter error, 0x20 unrecoverable error
    n=4  0x0C paper near end, 0x60 paper end
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from probes import printer
from probes.emulators import with_faults
from probes.emulators._model import TerminalState
from probes.emulators._pty import PtyDevice, forbidden_port, missing_port

FAULTS = frozenset(printer.FINDINGS)
BASE = 0x12
Paper = Literal["fine", "near_end", "out"]
# Line behaviour beside a healthy status: "silent" never answers, "garbage" answers 0xFF,
# "random" streams random bytes, "huge" answers 64 KiB, "hang_up" closes the pty on a query.
LineFault = Literal["silent", "garbage", "random", "huge", "hang_up"]
HUGE_REPLY = 64 * 1024


@dataclass(frozen=True)
class PrinterState:
    paper: Paper = "fine"
    offline: bool = False
    cover_open: bool = False
    cutter_error: bool = False
    unrecoverable: bool = False

    def status_byte(self, n: int) -> int:
        out = self.paper == "out"
        stopped = self.offline or self.cover_open or out or self.cutter_error or self.unrecoverable
        error = self.cutter_error or self.unrecoverable
        bits = {
            1: (0x08 if stopped else 0) | (0x20 if self.offline else 0),
            2: (0x04 if self.cover_open else 0) | (0x20 if out else 0) | (0x40 if error else 0),
            3: (0x08 if self.cutter_error else 0) | (0x20 if self.unrecoverable else 0),
            # Paper out: the near-end sensor reads empty too, as on real printers (0x7E).
            4: {"fine": 0, "near_end": 0x0C, "out": 0x6C}[self.paper],
        }
        return BASE | bits[n]


STATE_FAULTS = {
    "printer.offline": {"offline": True},
    "printer.cover_open": {"cover_open": True},
    "printer.paper_out": {"paper": "out"},
    "printer.paper_near_end": {"paper": "near_end"},
    "printer.cutter_error": {"cutter_error": True},
    "printer.unrecoverable": {"unrecoverable": True},
}
LINE_FAULTS: dict[str, LineFault] = {"printer.no_response": "silent", "printer.bad_reply": "garbage"}


class PrinterEmulator(PtyDevice):
    def __init__(self, state: PrinterState | None = None, line_fault: LineFault | None = None) -> None:
        super().__init__()
        self.state = state or PrinterState()
        self.printed = bytearray()
        self._pending = b""
        self.set_line_fault(line_fault)

    def on_data(self, data: bytes) -> None:
        buf = self._pending + data
        i = 0
        while i < len(buf):
            if buf[i] == 0x10 and buf[i + 1 : i + 2] in (b"\x04", b""):
                if i + 2 >= len(buf):
                    break  # DLE or DLE EOT split across reads: wait for the rest
                self.answer(buf[i + 2])
                i += 3
                continue
            self.printed.append(buf[i])
            i += 1
        self._pending = buf[i:]

    def answer(self, n: int) -> None:
        if not 1 <= n <= 4:
            return  # a real printer ignores DLE EOT with an undefined n
        if self.line_fault == "silent" or self.line_fault == "random":
            return
        if self.line_fault == "garbage":
            self.send(b"\xff")
        elif self.line_fault == "huge":
            self.send(bytes([self.state.status_byte(n)]) + os.urandom(HUGE_REPLY))
        elif self.line_fault == "hang_up":
            self.hang_up()
        else:
            self.send(bytes([self.state.status_byte(n)]))


@contextlib.contextmanager
def start(state: TerminalState, workdir: Path) -> Iterator[dict[str, Any]]:
    faults = state.faults & FAULTS

    def port(path: str) -> dict[str, Any]:
        return {"probes": {"printer": {"port": path, "transport": "serial"}}}

    if "printer.absent" in faults:
        yield port(missing_port(workdir))
        return
    if "printer.permission_denied" in faults:
        with forbidden_port(workdir) as path:
            yield port(path)
        return
    line_fault = next((LINE_FAULTS[f] for f in sorted(faults & LINE_FAULTS.keys())), None)
    with PrinterEmulator(with_faults(PrinterState(), STATE_FAULTS, faults), line_fault) as device:
        yield port(device.path)
