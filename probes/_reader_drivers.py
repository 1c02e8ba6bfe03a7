"""Card-reader drivers: how to ask a reader on a serial line for its status.

Vendors differ; a driver turns one status exchange into a ReaderStatus or raises
NoReply (silence) / BadFrame (an answer that is not a well-formed reply). The reference
driver speaks the framed protocol of DESIGN.md:

    STX 0x02 | LEN (2 bytes, big-endian, len(CMD+DATA)) | CMD | DATA | ETX 0x03 | LRC
    LRC = XOR of every byte from LEN through ETX
    GET_STATUS 0x01 -> 0x81, DATA = status byte + firmware version (ASCII)
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Protocol

from probes._serial_line import Line

STX, ETX = 0x02, 0x03
GET_STATUS, STATUS_REPLY = 0x01, 0x81
MAX_BODY = 256  # CMD + status + version; anything longer is not this protocol
TAMPER, CARD_PRESENT = 0x01, 0x02
SLOT_BITS = {"ic": 0x04, "magstripe": 0x08, "contactless": 0x10}


@dataclass(frozen=True)
class ReaderStatus:
    tamper: bool
    card_present: bool
    slot_faults: tuple[str, ...]
    firmware: str


class NoReply(Exception):
    pass


class BadFrame(Exception):
    def __init__(self, problem: str, head: bytes = b"") -> None:
        self.head = head[:8]
        super().__init__(problem)


class ReaderDriver(Protocol):
    def status(self, line: Line, deadline: float) -> ReaderStatus: ...


def lrc(data: bytes) -> int:
    return functools.reduce(operator.xor, data, 0)


def frame(cmd: int, data: bytes = b"") -> bytes:
    length = (1 + len(data)).to_bytes(2, "big")
    body = length + bytes([cmd]) + data + bytes([ETX])
    return bytes([STX]) + body + bytes([lrc(body)])


def read_frame(line: Line, deadline: float) -> bytes:
    """One frame's CMD + DATA. Stops at the first byte that rules the frame out."""
    head = line.read(1, deadline)
    if not head:
        raise NoReply
    if head[0] != STX:
        raise BadFrame(f"reply starts with 0x{head[0]:02x}, not STX", head)
    length = line.read(2, deadline)
    if len(length) < 2:
        raise BadFrame("truncated frame: length missing", head + length)
    size = int.from_bytes(length, "big")
    if not 1 <= size <= MAX_BODY:
        raise BadFrame(f"frame length {size} out of range 1..{MAX_BODY}", head + length)
    rest = line.read(size + 2, deadline)
    if len(rest) < size + 2:
        raise BadFrame(f"truncated frame: {len(rest)} of {size + 2} bytes after the length", head + length + rest)
    body, etx, check = rest[:size], rest[size], rest[size + 1]
    if etx != ETX:
        raise BadFrame(f"0x{etx:02x} where ETX belongs", head + length + rest)
    if check != lrc(length + body + bytes([etx])):
        raise BadFrame("LRC mismatch", head + length + rest)
    return body


def parse_status(body: bytes) -> ReaderStatus:
    if body[0] != STATUS_REPLY or len(body) < 2:
        raise BadFrame(f"unexpected reply 0x{body[0]:02x} with {len(body) - 1} data bytes to GET_STATUS", body)
    bits, version = body[1], body[2:]
    if not all(0x20 <= b < 0x7F for b in version):
        raise BadFrame("firmware version is not printable ASCII", body)
    faults = tuple(name for name, bit in SLOT_BITS.items() if bits & bit)
    return ReaderStatus(bool(bits & TAMPER), bool(bits & CARD_PRESENT), faults, version.decode("ascii"))


class ReferenceDriver:
    def status(self, line: Line, deadline: float) -> ReaderStatus:
        line.discard_input()
        line.write(frame(GET_STATUS), deadline)
        return parse_status(read_frame(line, deadline))


DRIVERS: dict[str, ReaderDriver] = {"reference": ReferenceDriver()}
