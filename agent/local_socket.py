"""A local socket the payment app writes one JSON event to and reads the answer from.

    request:  {"code": "51", "scheme": "iso8583", "context": {...}}\\n
    answer:   {"ok": true, "event_id": ..., "diagnosis": {summary}}\\n
              {"ok": false, "error": "why"}\\n

Listens on `unix:/path` or on a loopback `host:port` only: it is not a network service.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.sources import ErrorEvent, event_id, now_iso, parse_event_bytes

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB): agent/resident.py says why
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("posdiag.socket")
MAX_REQUEST_BYTES = 64 * 1024
READ_TIMEOUT_S = 2.0


def bind(listen: str) -> socket.socket:
    if listen.startswith("unix:"):
        path = Path(listen[5:])
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        os.chmod(path, 0o660)
    else:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{listen}: the event socket listens on loopback only")
        sock = socket.create_server((host, int(port)), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.listen(16)
    return sock


class LocalSocket:
    def __init__(self, listen: str, submit: Callable[[ErrorEvent], None], reply_timeout_s: float) -> None:
        self.listen = listen
        self.sock = bind(listen)
        self.submit = submit
        self.reply_timeout_s = reply_timeout_s
        self.thread = threading.Thread(target=self._accept, name="event-socket", daemon=True)

    @property
    def address(self) -> Any:
        return self.sock.getsockname()

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="event-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(READ_TIMEOUT_S)
            try:
                raw = read_request(conn)
                code, scheme, context = parse_event_bytes(raw)
            except TimeoutError:
                return send(conn, {"ok": False, "error": "no complete request within 2 s"})
            except ValueError as exc:
                log.warning("dropped a malformed event from the socket: %s", exc)
                return send(conn, {"ok": False, "error": f"malformed event: {exc}"})
            except OSError:
                return None
            answered = threading.Event()
            answer: dict[str, Any] = {}

            def reply(summary: dict[str, Any]) -> None:
                answer.update(summary)
                answered.set()

            event = ErrorEvent(event_id("socket", os.urandom(8).hex()), code, scheme, "socket", now_iso(), context, reply=reply)
            self.submit(event)
            if answered.wait(self.reply_timeout_s):
                send(conn, {"ok": True, "event_id": event.id, **answer})
            else:
                send(conn, {"ok": True, "event_id": event.id, "queued": True})


def read_request(conn: socket.socket) -> bytes:
    """The request line; TimeoutError when it takes over READ_TIMEOUT_S in all (a client
    trickling a byte at a time would otherwise hold its thread for hours)."""
    deadline = time.monotonic() + READ_TIMEOUT_S
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        conn.settimeout(remaining)
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    return data.split(b"\n", 1)[0]


def send(conn: socket.socket, answer: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(answer, ensure_ascii=False).encode("utf-8") + b"\n")
