"""pcscd's client socket, played on a Unix socket: pcsc-lite's own client library (through
pyscard) talks to it exactly as to the real daemon, so the probe's PC/SC code runs unchanged.

The protocol is pcsc-lite's (src/winscard_msg.h, winscard_svc.c and winscard_clnt.c of
pcsc-lite 1.9, protocol 4.4; the server answers with the version the client asks for): a
client sends an 8-byte header {size, command} and a body, the server answers with the body
only. Handled: CMD_VERSION, SCARD_ESTABLISH_CONTEXT and RELEASE_CONTEXT, CMD_GET_READERS_STATE
and CMD_WAIT/STOP_WAITING_READER_STATE_CHANGE (the reader table: 16 READER_STATE records of
184 bytes), SCARD_CONNECT, SCARD_STATUS, SCARD_TRANSMIT and SCARD_DISCONNECT; anything else
answers SCARD_E_UNSUPPORTED_FEATURE in the body's rv field.

pcsc-lite's client library reads PCSCLITE_CSOCK_NAME once per process, at its first call: a
process that already talked to another pcscd keeps talking to that one.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct("=II")  # size of the body, command
READER_STATE = struct.Struct("@128sIIi33sII")  # name, eventCounter, readerState, readerSharing, ATR, length, protocol
MAX_READERS = 16
CMD_VERSION, CMD_GET_READERS_STATE, CMD_WAIT_CHANGE, CMD_STOP_WAITING = 0x11, 0x12, 0x13, 0x14
ESTABLISH, RELEASE, CONNECT, DISCONNECT, TRANSMIT, STATUS = 0x01, 0x02, 0x04, 0x06, 0x09, 0x0B
BODY_SIZES = {CMD_VERSION: 12, ESTABLISH: 12, RELEASE: 8, CONNECT: 4 + 128 + 20, DISCONNECT: 12, STATUS: 8, TRANSMIT: 32}
S_SUCCESS, E_SHARING_VIOLATION, E_NO_SMARTCARD, E_UNSUPPORTED = 0, 0x8010000B, 0x8010000C, 0x80100022
SCARD_ABSENT, SCARD_PRESENT, SCARD_POWERED, SCARD_NEGOTIABLE = 0x2, 0x4, 0x10, 0x20
SHARING_EXCLUSIVE = -1
PROTOCOL_T1 = 0x2
# SELECT by name (CLA 00, INS A4, P1 04): the payment directories a card answers or does not.
SW_OK, SW_NOT_FOUND = b"\x90\x00", b"\x6a\x82"


@dataclass(frozen=True)
class Card:
    atr: bytes
    payment_app: bool  # answers SELECT 2PAY.SYS.DDF01 / 1PAY.SYS.DDF01 with 9000 (else 6A82)
    held_exclusively: bool = False  # another program (the payment app) holds it: connect refused

    def answer(self, apdu: bytes) -> bytes:
        if apdu[:3] == b"\x00\xa4\x04" and b"PAY.SYS.DDF01" in apdu:
            return b"\x6f\x00" + SW_OK if self.payment_app else SW_NOT_FOUND
        return b"\x6d\x00"  # instruction not supported


class PcscDaemon:
    """One reader, with or without a card, served to every client that connects to `path`."""

    def __init__(self, path: Path, reader: str, card: Card | None) -> None:
        self.path, self.reader, self.card = path, reader, card
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, name="pcscd", daemon=True)

    def __enter__(self) -> PcscDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(1.0)
        self.sock.close()

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self.client, args=(conn,), name="pcscd-client", daemon=True).start()

    def client(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        with conn, contextlib.suppress(OSError, ConnectionError):
            while not self.stopping.is_set():
                head = read_exactly(conn, HEADER.size)
                if head is None:
                    return
                size, command = HEADER.unpack(head)
                body = read_exactly(conn, size) if size else b""
                if body is None:
                    return
                extra = b""
                if command == TRANSMIT:  # the APDU follows the body, cbSendLength bytes
                    extra = read_exactly(conn, struct.unpack_from("=I", body, 12)[0]) or b""
                conn.sendall(self.respond(command, body, extra))

    def reader_table(self) -> bytes:
        card = self.card
        state = SCARD_PRESENT | SCARD_POWERED | SCARD_NEGOTIABLE if card else SCARD_ABSENT
        sharing = SHARING_EXCLUSIVE if card and card.held_exclusively else 0
        atr = card.atr if card else b""
        first = READER_STATE.pack(self.reader.encode(), 1, state, sharing, atr, len(atr), PROTOCOL_T1 if card else 0)
        return first + bytes(READER_STATE.size * (MAX_READERS - 1))

    def respond(self, command: int, body: bytes, apdu: bytes) -> bytes:
        if command in (CMD_GET_READERS_STATE, CMD_WAIT_CHANGE):
            return self.reader_table()
        if command == CMD_STOP_WAITING:
            return struct.pack("=II", 0, S_SUCCESS)
        if command == CMD_VERSION:
            major, minor, _ = struct.unpack("=iiI", body)
            return struct.pack("=iiI", major, minor, S_SUCCESS)
        if command == ESTABLISH:
            scope, _, _ = struct.unpack("=III", body)
            return struct.pack("=III", scope, 0x5A17, S_SUCCESS)
        if command == CONNECT:
            return self.connect(body)
        if command == TRANSMIT:
            return self.transmit(body, apdu)
        if command in (RELEASE, DISCONNECT, STATUS):
            return body[:-4] + struct.pack("=I", S_SUCCESS)
        return body[:-4] + struct.pack("=I", E_UNSUPPORTED) if len(body) >= 4 else b""

    def connect(self, body: bytes) -> bytes:
        context, name, share, preferred, _, _, _ = struct.unpack("=I128sIIiII", body)
        if self.card is None:
            rv, card, protocol = E_NO_SMARTCARD, 0, 0
        elif self.card.held_exclusively:
            rv, card, protocol = E_SHARING_VIOLATION, 0, 0
        else:
            rv, card, protocol = S_SUCCESS, 0x1C4D, PROTOCOL_T1
        return struct.pack("=I128sIIiII", context, name, share, preferred, card, protocol, rv)

    def transmit(self, body: bytes, apdu: bytes) -> bytes:
        card, send_pci, send_pci_length, _, recv_pci, recv_pci_length, room, _ = struct.unpack("=iIIIIIII", body)
        response = self.card.answer(apdu) if self.card else b""
        rv = S_SUCCESS if len(response) <= room else 0x80100008  # SCARD_E_INSUFFICIENT_BUFFER
        head = struct.pack("=iIIIIIII", card, send_pci, send_pci_length, len(apdu), recv_pci, recv_pci_length, len(response), rv)
        return head + (response if rv == S_SUCCESS else b"")


def read_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)
