"""A card reader on a pty speaking the reference framed protocol of DESIGN.md, or, for the
PC/SC faults, a PC/SC reader behind an emulated pcscd (_pcscd.py).

    STX 0x02 | LEN (2 bytes BE, len(CMD+DATA)) | CMD | DATA | ETX 0x03 | LRC (XOR of LEN..ETX)

It answers GET_STATUS (0x01) with 0x81, the status byte (bit0 tamper, bit1 card present,
bit2 IC, bit3 magstripe, bit4 contactless slot fault) and its firmware version. The framing
is written out here again rather than imported from the probe's driver, so a framing mistake
in either shows up as a disagreement in the tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from probes import card_reader
from probes.contract.errors import UsageError
from probes.emulators._model import TerminalState
from probes.emulators._pcscd import Card, PcscDaemon
from probes.emulators._pty import PtyDevice, forbidden_port, missing_port

FAULTS = frozenset(card_reader.FINDINGS)
PCSC_READER = "posdiag simulated ICC Reader 00 00"
# A city transit card: it answers, but carries no payment application (SELECT PPSE/PSE: 6A82).
TRANSIT_ATR = bytes.fromhex("3b8f8001804f0ca0000003060300030000000068")
BANK_ATR = bytes.fromhex("3b6800000073c84013009000")
FIRMWARE = "RDR-2.4.1"
SLOT_BITS = {"ic": 0x04, "magstripe": 0x08, "contactless": 0x10}
# "silent" never answers, "bad_lrc" spoils the checksum, "half" sends half a frame then
# nothing, "random" streams random bytes, "huge" announces and sends a 64 KiB frame,
# "hang_up" closes the pty when asked.
LineFault = Literal["silent", "bad_lrc", "half", "random", "huge", "hang_up"]


@dataclass(frozen=True)
class ReaderState:
    tamper: bool = False
    card_present: bool = False
    slot_faults: frozenset[str] = frozenset()
    firmware: str = FIRMWARE

    def status_byte(self) -> int:
        value = (0x01 if self.tamper else 0) | (0x02 if self.card_present else 0)
        for slot in self.slot_faults:
            value |= SLOT_BITS[slot]
        return value


def encode(cmd: int, data: bytes) -> bytes:
    inner = len(bytes([cmd]) + data).to_bytes(2, "big") + bytes([cmd]) + data + b"\x03"
    check = 0
    for byte in inner:
        check ^= byte
    return b"\x02" + inner + bytes([check])


class ReaderEmulator(PtyDevice):
    def __init__(self, state: ReaderState | None = None, line_fault: LineFault | None = None) -> None:
        super().__init__()
        self.state = state or ReaderState()
        self._inbox = bytearray()
        self.set_line_fault(line_fault)

    def on_data(self, data: bytes) -> None:
        self._inbox += data
        while True:
            start = self._inbox.find(b"\x02")
            if start < 0:
                self._inbox.clear()
                return
            del self._inbox[:start]
            if len(self._inbox) < 3:
                return
            end = 3 + int.from_bytes(self._inbox[1:3], "big") + 2
            if len(self._inbox) < end:
                return
            request = bytes(self._inbox[:end])
            del self._inbox[:end]
            if request[-2] == 0x03 and request[3] == 0x01:
                self.answer()

    def answer(self) -> None:
        reply = encode(0x81, bytes([self.state.status_byte()]) + self.state.firmware.encode("ascii"))
        fault = self.line_fault
        if fault in ("silent", "random"):
            return
        if fault == "bad_lrc":
            reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
        elif fault == "half":
            reply = reply[: len(reply) // 2]
        elif fault == "huge":
            size = 0xFFFF
            reply = b"\x02" + size.to_bytes(2, "big") + os.urandom(size + 2)
        elif fault == "hang_up":
            self.hang_up()
            return
        self.send(reply)


def state_for(faults: frozenset[str]) -> ReaderState:
    # --simulate reader.slot_fault breaks the IC slot, the one a chip transaction needs first.
    return ReaderState(
        tamper="reader.tamper" in faults,
        slot_faults=frozenset({"ic"}) if "reader.slot_fault" in faults else frozenset(),
    )


@contextlib.contextmanager
def start(state: TerminalState, workdir: Path) -> Iterator[dict[str, Any]]:
    if state.uses_pcsc:
        with pcsc_reader(state, workdir) as overrides:
            yield overrides
        return
    faults = state.faults & FAULTS

    def port(path: str) -> dict[str, Any]:
        return {"probes": {"card_reader": {"port": path, "usb_vid": "", "usb_pid": ""}}}

    if "reader.absent" in faults:
        yield port(missing_port(workdir))
        return
    if "reader.permission_denied" in faults:
        with forbidden_port(workdir) as path:
            yield port(path)
        return
    fault: LineFault | None = None
    if "reader.no_response" in faults:
        fault = "silent"
    elif "reader.bad_frame" in faults:
        fault = "bad_lrc"
    with ReaderEmulator(state_for(faults), fault) as device:
        yield port(device.path)


@contextlib.contextmanager
def pcsc_reader(state: TerminalState, workdir: Path) -> Iterator[dict[str, Any]]:
    """pcscd stopped (no socket), a card the payment app holds exclusively, or a card with no
    payment application in the reader. pcsc-lite finds the daemon through PCSCLITE_CSOCK_NAME,
    set for the emulator's life and restored after."""
    if importlib.util.find_spec("smartcard") is None:
        faults = ", ".join(sorted(state.faults & set(card_reader.PCSC_FINDINGS)))
        raise UsageError(f"{faults}: the simulated PC/SC reader needs pyscard (pip install 'posdiag[pcsc]')")
    path = workdir / "pcscd.comm"
    previous = os.environ.get("PCSCLITE_CSOCK_NAME")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(path)
    overrides = {"probes": {"card_reader": {"driver": "pcsc", "port": "", "usb_vid": "", "usb_pid": "", "reader_name": ""}}}
    try:
        if state.is_down("pcscd"):
            yield overrides  # nothing listens: pcsc-lite says SCARD_E_NO_SERVICE
            return
        card = Card(TRANSIT_ATR, payment_app=False) if "reader.no_payment_app" in state.faults else Card(BANK_ATR, payment_app=True)
        card = Card(card.atr, card.payment_app, held_exclusively="reader.in_use" in state.faults)
        with PcscDaemon(path, PCSC_READER, card):
            yield overrides
    finally:
        if previous is None:
            os.environ.pop("PCSCLITE_CSOCK_NAME", None)
        else:
            os.environ["PCSCLITE_CSOCK_NAME"] = previous
