"""Loopback servers standing in for the acquirer host: a TLS endpoint with a CA made at
run time, and an HTTP server whose Date header is the reference clock.

Faults are produced the way a real network produces them: a name under .invalid (RFC 2606,
never resolves), a bound port that does not listen (refused), a listener whose accept
queue is full (SYNs dropped: connect timeout), a certificate from another CA, an expired
or nearly expired certificate, a slow handshake, a Date header ten minutes off.

What the device model says is down upstream is played the same way: with no route (or no
DNS, or the public APN instead of the acquirer's private one) the host's name does not
resolve and the clock reference cannot be reached; behind a Wi-Fi captive portal the TLS
handshake meets the portal's own certificate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from probes import network
from probes.contract.errors import UsageError
from probes.emulators import _ca
from probes.emulators._model import TerminalState

FAULTS = frozenset(network.FINDINGS) - frozenset(network.LINK_FINDINGS) - frozenset(network.WIFI_FINDINGS)
CERT_FAULTS = frozenset({"network.tls_failed", "network.cert_expired", "network.cert_expiring"})
HOST = _ca.HOST
UNRESOLVABLE = "acquirer.posdiag.invalid"
CLOCK_OFFSET_S = -600
SLOW_HANDSHAKE_S = 0.4
HIGH_LATENCY_MS = 250.0
CONNECT_TIMEOUT_S = 1.0


class TlsEndpoint:
    """Accepts TLS connections on loopback, completes the handshake, then closes
    (with no context: accepts plain TCP and closes)."""

    def __init__(self, context: ssl.SSLContext | None, handshake_delay_s: float) -> None:
        self.context = context
        self.delay = handshake_delay_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, name="acquirer-tls", daemon=True)

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self.greet, args=(conn,), daemon=True).start()

    def greet(self, conn: socket.socket) -> None:
        with conn:
            time.sleep(self.delay)
            conn.settimeout(2.0)
            if self.context is None:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    def __enter__(self) -> TlsEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.sock.close()
        self.thread.join(1.0)


def clock_server(offset_s: float) -> http.server.ThreadingHTTPServer:
    class DateHandler(http.server.BaseHTTPRequestHandler):
        def date_time_string(self, timestamp: float | None = None) -> str:
            return super().date_time_string(time.time() + offset_s)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), DateHandler)


def tls_context(faults: frozenset[str], workdir: Path) -> ssl.SSLContext | None:
    """The endpoint's server context, or None (plain TCP) when no certificate can be made here."""
    backend = _ca.available_backend()
    if backend is None:
        if faults & CERT_FAULTS:
            raise UsageError(
                f"{', '.join(sorted(faults & CERT_FAULTS))}: the simulated acquirer makes its certificates "
                "with the openssl command or the cryptography package; neither is installed"
            )
        print("posdiag: simulated acquirer without TLS: no openssl command to make its certificate", file=sys.stderr)
        return None
    now = dt.datetime.now(dt.UTC)
    trusted = _ca.make_ca("posdiag simulated acquirer CA", workdir, backend)
    # a wrong CA: the host's certificate is not the one the terminal trusts, or a captive portal answers
    signer = _ca.make_ca("some other CA", workdir, backend) if "network.tls_failed" in faults else trusted
    not_after = now + dt.timedelta(days=400)
    if "network.cert_expired" in faults:
        not_after = now - dt.timedelta(days=2)
    elif "network.cert_expiring" in faults:
        not_after = now + dt.timedelta(days=5)
    cert_pem, key_pem = _ca.issue(signer, not_after, workdir, backend)
    (workdir / "ca.pem").write_bytes(trusted.cert_pem)
    (workdir / "server.pem").write_bytes(cert_pem + key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(workdir / "server.pem")
    return context


@contextlib.contextmanager
def start(state: TerminalState, workdir: Path) -> Iterator[dict[str, Any]]:
    faults = state.faults & FAULTS
    if state.is_down("tls") and not state.is_down("host") and "network.cert_expired" not in faults:
        faults |= {"network.tls_failed"}  # what the portal (or another CA) presents is not trusted
    context = tls_context(faults, workdir)
    delay = SLOW_HANDSHAKE_S if "network.high_latency" in faults else 0.0
    network: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(TlsEndpoint(context, delay))
        port = endpoint.port
        if "network.connect_refused" in faults:
            closed = stack.enter_context(socket.socket())
            closed.bind(("127.0.0.1", 0))  # bound, never listening: the kernel answers RST
            port = closed.getsockname()[1]
        elif "network.connect_timeout" in faults:
            full = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=0))
            filler = stack.enter_context(socket.create_connection(full.getsockname()))
            del filler
            port = full.getsockname()[1]
            network["connect_timeout_seconds"] = CONNECT_TIMEOUT_S
        clock = clock_server(CLOCK_OFFSET_S if "network.clock_skew" in faults else 0.0)
        stack.callback(clock.server_close)
        stack.callback(clock.shutdown)
        threading.Thread(target=clock.serve_forever, args=(0.1,), name="acquirer-clock", daemon=True).start()
        host = UNRESOLVABLE if state.is_down("dns") else HOST
        reference = UNRESOLVABLE if state.is_down("route") else "127.0.0.1"
        network.update(
            {
                "hosts": [
                    {"name": "acquirer", "host": host, "port": port, "tls": context is not None, "ca_file": str(workdir / "ca.pem"), "server_name": HOST}
                ],
                "clock_reference": f"http://{reference}:{clock.server_address[1]}/",
                "high_latency_ms": HIGH_LATENCY_MS,
            }
        )
        yield {"probes": {"network": network}}
