"""A loopback stand-in for the support server's bundle upload endpoint, for tests and bench.

It answers like the real server (201 stored, 200 already had it, 401 bad token, 413 too
large, 422 bad signature or malformed bundle), takes visit outcome records (`/api/v1/outcomes`,
stored once by their `outcome_id`), records every bundle or record it stored and every
answer it gave, and can misbehave on purpose: queue actions in `faults`, one per request:

    "500", "503", "408", ...  answer that status
    "429:N"                  429 with Retry-After: N (seconds); "429:date:N" as an HTTP date
    "503:N"                  503 with Retry-After: N (a server shedding load)
    "cut-body"               read half the body, then drop the connection without answering
    "cut-after-store"        store the bundle, then drop the connection without answering
    "slow:S"                 sleep S seconds before answering normally

`hook(phase, request_number)` is called at "headers", "body", "stored" and "answered",
so a test can act (e.g. SIGKILL the uploader) at an exact point of an exchange.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from agent import bundle

Hook = Callable[[str, int], None]


class UploadServer:
    def __init__(self, token: str, port: int = 0, max_bytes: int = 8 << 20, tls: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.tls = tls
        self.port = port
        self.max_bytes = max_bytes
        self.faults: collections.deque[str] = collections.deque()
        self.hook: Hook | None = None
        self.stored: dict[str, bytes] = {}
        self.store_order: list[str] = []
        self.answers: list[tuple[str, int]] = []
        self.seen: list[dict[str, str]] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> UploadServer:
        handler = type("Handler", (Handler,), {"owner": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.daemon_threads = True
        if self.tls:
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def duplicates(self) -> int:
        return sum(1 for _, status in self.answers if status == 200)

    def _next_fault(self) -> str:
        with self.lock:
            self.requests += 1
            return self.faults.popleft() if self.faults else ""

    def _call(self, phase: str, number: int) -> None:
        if self.hook:
            self.hook(phase, number)

    def _store(self, bundle_id: str, body: bytes) -> int:
        with self.lock:
            if bundle_id in self.stored:
                return 200
            self.stored[bundle_id] = body
            self.store_order.append(bundle_id)
            return 201


class Handler(BaseHTTPRequestHandler):
    owner: UploadServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # clients that die on purpose
            super().handle()

    def do_POST(self) -> None:
        server = self.owner
        fault = server._next_fault()
        number = server.requests
        with server.lock:
            server.seen.append(dict(self.headers))
        server._call("headers", number)
        if self.path not in ("/api/v1/bundles", "/api/v1/outcomes"):
            return self.answer(404, {"error": "not_found", "detail": self.path})
        if self.headers.get("Authorization") != f"Bearer {server.token}":
            return self.answer(401, {"error": "unauthorized", "detail": "unknown or revoked token"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > server.max_bytes:
            self.close_connection = True
            return self.answer(413, {"error": "too_large", "detail": f"{length} > {server.max_bytes}"})
        if fault == "cut-body":
            self.rfile.read(length // 2)
            return self.drop()
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            return self.drop()
        server._call("body", number)
        if fault.isdigit():
            return self.answer(int(fault), {"error": "unavailable", "detail": "fault injected"})
        if fault.startswith(("429:", "503:")):
            return self.answer(int(fault[:3]), {"error": "slow_down", "detail": "fault injected"}, retry_after(fault))
        if self.path == "/api/v1/outcomes":  # a visit outcome record: stored once by its id
            return self.record(json.loads(body)["outcome_id"], body)
        problems = bundle.verify(body, server.token)
        if problems:
            return self.answer(422, {"error": "bad_bundle", "detail": "; ".join(problems)})
        manifest, _ = bundle.read(body)
        if self.headers.get("Idempotency-Key") != manifest["bundle_id"]:
            return self.answer(400, {"error": "bad_request", "detail": "Idempotency-Key is not the bundle id"})
        status = server._store(manifest["bundle_id"], body)
        server._call("stored", number)
        if fault == "cut-after-store":
            return self.drop()
        if fault.startswith("slow:"):
            time.sleep(float(fault.split(":")[1]))
        self.answer(status, {"bundle_id": manifest["bundle_id"]})
        with server.lock:
            server.answers.append((manifest["bundle_id"], status))
        server._call("answered", number)

    def record(self, outcome_id: str, body: bytes) -> None:
        server = self.owner
        status = server._store(outcome_id, body)
        self.answer(status, {"outcome_id": outcome_id})
        with server.lock:
            server.answers.append((outcome_id, status))

    def answer(self, status: int, body: dict, retry_after_value: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after_value:
            self.send_header("Retry-After", retry_after_value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


def retry_after(fault: str) -> str:
    parts = fault.split(":")
    if parts[1] == "date":
        return email.utils.formatdate(time.time() + float(parts[2]), usegmt=True)
    return parts[1]


@contextlib.contextmanager
def running(token: str, port: int = 0) -> Iterator[UploadServer]:
    with UploadServer(token, port) as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
