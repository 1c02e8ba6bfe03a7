"""The agent's small, frequent exchanges with the support server: probe-request polls and
heartbeats, over one kept-alive connection with TLS session resumption.

These run every few minutes for the life of a terminal, on a metered cellular link and in
the agent's idle memory, so they use the standard library's http.client rather than
requests (6 MB of resident imports the idle agent would otherwise carry). Uploads, which
are rare and large, keep using requests with tenacity (remote/client.py).

A server that closes the kept-alive connection between exchanges (uvicorn does after a few
seconds) costs a new TCP connection, but the TLS session ticket from the last handshake is
offered again, so the certificate chain is not sent again.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class LinkError(Exception):
    """The exchange did not happen or was not understood; the message is one line for people."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the decoded JSON, or None for an empty body
    headers: dict[str, str]  # names in lower case


class _Resuming(http.client.HTTPSConnection):
    """An HTTPS connection that offers a previous connection's TLS session."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext, session: ssl.SSLSession | None) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.session = session
        self.tls: ssl.SSLSocket | None = None  # kept: http.client drops `sock` when the server closes

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout, self.source_address)
        self.sock = self.tls = self._context.wrap_socket(sock, server_hostname=self.host, session=self.session)


class Link:
    """One server, one token, one connection reused across exchanges."""

    def __init__(self, server_url: str, token: str, ca_file: str = "", timeout_s: float = 30.0) -> None:
        parts = urlsplit(server_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LinkError(f"server_url {server_url!r} is not an http(s) URL")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path
        self.token = token
        self.timeout_s = timeout_s
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.context = ssl.create_default_context(cafile=ca_file or None)
        self.conn: http.client.HTTPConnection | None = None
        self.session: ssl.SSLSession | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.context is not None:
                self.conn = _Resuming(self.host, self.port, self.timeout_s, self.context, self.session)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self.conn

    def exchange(self, method: str, path: str, payload: Any = None) -> Answer:
        """Send one request (JSON body when `payload` is not None); redirects are not followed,
        so the token goes to the configured server only. A connection the server closed since
        the last exchange is reopened once."""
        body = None if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, self.base_path + path, body=body, headers=headers)
                response = conn.getresponse()
                self._remember_session(conn)
                raw = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue
                raise LinkError(f"{self.host}:{self.port} closed the connection ({type(exc).__name__})") from None
            except ssl.SSLError as exc:
                self.close()
                raise LinkError(f"TLS with {self.host}:{self.port} failed: {exc.reason or exc}") from None
            except OSError as exc:
                self.close()
                raise LinkError(f"cannot reach {self.host}:{self.port}: {exc.strerror or type(exc).__name__}") from None
            if response.will_close:
                self.close()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return Answer(response.status, _decode(raw, response.status), headers)
        raise AssertionError("unreachable")

    def _remember_session(self, conn: http.client.HTTPConnection) -> None:
        """TLS 1.3 session tickets arrive after the handshake: take the session once an
        answer has been read."""
        tls = getattr(conn, "tls", None)
        if tls is not None and tls.session is not None:
            self.session = tls.session

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _decode(raw: bytes, status: int) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # [[[[... is a RecursionError, not a decode error
        raise LinkError(f"server answered {status} with something that is not JSON") from None
