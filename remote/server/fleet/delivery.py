"""One webhook POST to a receiver that may be broken or hostile (issue 21).

- Only http and https. The host is looked up once, in a thread of its own and within the
  deadline (getaddrinfo has no timeout); unless `allow_private` every address it names must
  be public (server_settings.public: not loopback, private, link-local, ...), and the
  connection goes to the address that was checked, so a second lookup (DNS rebinding)
  cannot send it elsewhere.
- One deadline for the whole exchange: lookup, connect, TLS handshake, request, status
  line, headers and answer. Per-read timeouts are not enough (a receiver that sends a byte
  every two seconds never trips one): a watchdog shuts the socket down at the deadline,
  which ends whatever read is waiting.
- At most ANSWER_BYTES of the answer's body are read, then the connection is closed. The
  status line and headers are bounded by http.client (lines of 64 KiB, 100 headers).

Redirects are not followed (a 3xx is a failed delivery, retried like any other).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

from remote.server_settings import public

ANSWER_BYTES = 4096


@dataclass(frozen=True)
class Outcome:
    """`status` is the receiver's HTTP status (None when it gave none); `error` says why the
    delivery failed (None: a 2xx); `refused`: the target itself is not allowed."""

    status: int | None
    error: str | None
    refused: bool = False


class _Watchdog:
    """Shuts the exchange's current socket down at the deadline, from a timer thread."""

    def __init__(self, seconds: float) -> None:
        self.sock: socket.socket | None = None
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # the plain socket's: valid under TLS too

    def cancel(self) -> None:
        self._timer.cancel()


def post(url: str, body: bytes, headers: dict[str, str], deadline_seconds: float, allow_private: bool) -> Outcome:
    ends = time.monotonic() + deadline_seconds
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme not in ("http", "https") or not host:
        return Outcome(None, f"not an http(s) URL: {parts.scheme}://{host}", refused=True)
    try:
        addresses = _resolve(host, port, ends - time.monotonic())
    except OSError as exc:
        return Outcome(None, f"cannot resolve {host}: {exc}")
    closed = [a for a in addresses if not public(ipaddress.ip_address(a.split("%")[0]))]  # fe80::1%eth0
    if closed and not allow_private:
        return Outcome(None, f"refused: {host} is {closed[0]}, not a public address (allow_private_targets is off)", refused=True)
    watchdog = _Watchdog(max(0.0, ends - time.monotonic()))
    try:
        return _exchange(parts, host, addresses[0], port, body, headers, ends, watchdog)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if watchdog.fired or isinstance(exc, TimeoutError):  # the socket's own timeout is the same deadline
            return Outcome(None, f"no complete answer within {deadline_seconds:g} s")
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        watchdog.cancel()


def _exchange(
    parts: urllib.parse.SplitResult, host: str, address: str, port: int, body: bytes, headers: dict[str, str],
    ends: float, watchdog: _Watchdog,
) -> Outcome:  # fmt: skip
    sock = socket.create_connection((address, port), timeout=max(0.001, ends - time.monotonic()))
    watchdog.sock = sock
    conn: http.client.HTTPConnection | None = None
    try:
        if watchdog.fired:  # the deadline passed while connecting
            raise TimeoutError("deadline")
        https = parts.scheme == "https"
        if https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
            watchdog.sock = sock
            sock.do_handshake()
        conn = (http.client.HTTPSConnection if https else http.client.HTTPConnection)(host, port)
        conn.sock = sock  # connected to the checked address above: http.client does not look the host up again
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read(ANSWER_BYTES)
    finally:
        if conn is not None:
            conn.close()  # also closes the answer's file and the socket
        sock.close()
    status = answer.status
    return Outcome(status, None if 200 <= status < 300 else f"HTTP {status}")


def _resolve(host: str, port: int, seconds: float) -> list[str]:
    """The addresses of `host`, looked up in a thread that is given up on after `seconds`."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    found: list[str] = []
    failed: list[OSError] = []

    def lookup() -> None:
        try:
            found.extend(sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}))
        except OSError as exc:
            failed.append(exc)

    worker = threading.Thread(target=lookup, daemon=True, name="webhook-lookup")
    worker.start()
    worker.join(max(0.0, seconds))
    if worker.is_alive():
        raise TimeoutError(f"no answer within {seconds:.1f} s")
    if failed:
        raise failed[0]
    if not found:
        raise OSError("no address")
    return found
