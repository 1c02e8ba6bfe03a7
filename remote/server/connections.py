"""The connection limits uvicorn lacks: header and body read timeouts, a cap per client
address, and a cap on all connections below the process's file limit.

uvicorn (0.54) has `timeout_keep_alive` only: the idle time between two requests, reset by
every byte received; request-start and request-complete timeouts are listed as not done in
its issue #157. A client that sends its headers a byte at a time, or a body shorter than its
Content-Length, holds a connection and a file descriptor for as long as it likes, and ~1,000
such clients exhaust a 1,024 file limit: accept() fails and nobody is served. ASGI middleware
cannot help, since it runs only once the headers are complete.

GuardedProtocol is uvicorn's httptools protocol with:
- a header deadline: the request line and headers must be complete `header_timeout_seconds`
  after the connection opens or after the first byte of a following request;
- a body idle timeout: a body that stalls for `body_timeout_seconds` is dropped (not while
  uvicorn itself has paused reading because the app has not taken what came);
- at most `max_connections_per_client` connections per client address (IPv6: per /64),
  and HEALTH_RESERVE more that may only ask `GET /healthz`: a flood from one address never
  shuts out the operator's health check from that address (a balancer, a NAT, the host);
- at most `max_connections` in all, never more than the file limit less FD_RESERVE: a
  connection beyond that evicts the oldest one that is waiting for headers or idle, so a
  flood of slow clients costs only its own oldest connections, never a new client's turn.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from remote.server.auth import address_key

FD_RESERVE = 128  # database pool, blob files, log files, the listening sockets
HEALTH_RESERVE = 4  # connections past the per-address cap kept for GET /healthz only
HEALTH_PATH = b"/healthz"
log = logging.getLogger("posdiag.support")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    per_client: int
    total: int

    @classmethod
    def of(cls, settings: Any) -> ConnectionLimits:
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        ceiling = max(16, files - FD_RESERVE) if files != resource.RLIM_INFINITY else 1 << 20
        total = min(settings.max_connections or ceiling, ceiling)
        return cls(settings.header_timeout_seconds, settings.body_timeout_seconds, settings.max_connections_per_client, total)


class _Registry:
    """One server's connections: counts per client, and those that may be evicted."""

    def __init__(self) -> None:
        self.per_client: Counter[str] = Counter()
        self.total = 0
        self.idle: dict[GuardedProtocol, None] = {}  # waiting for headers or between requests, oldest first


_REGISTRIES: weakref.WeakKeyDictionary[Any, _Registry] = weakref.WeakKeyDictionary()


def _settings_of(app: Any) -> Any:
    """The [server] settings of the app uvicorn serves (under uvicorn's own wrappers)."""
    for _ in range(8):
        service = getattr(getattr(app, "state", None), "service", None)
        if service is not None:
            return service.settings
        app = getattr(app, "app", None)
    raise RuntimeError("GuardedProtocol serves only the posdiag support app")


class GuardedProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = ConnectionLimits.of(_settings_of(self.app))
        self.registry = _REGISTRIES.setdefault(server_state, _Registry())
        self._timer: asyncio.TimerHandle | None = None
        self._client_key: str | None = None
        self._health_only = False  # past the per-address cap: kept for health checks only
        self._dropped = False

    # -- connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        reg = self.registry
        self._client_key = address_key(self.client[0] if self.client else None)
        reg.per_client[self._client_key] += 1
        reg.total += 1
        if self.limits.per_client and reg.per_client[self._client_key] > self.limits.per_client:
            if reg.per_client[self._client_key] > self.limits.per_client + HEALTH_RESERVE:
                self._drop("more than %d connections from this address", self.limits.per_client)
                return
            self._health_only = True
        if reg.total > self.limits.total:
            oldest = next(iter(reg.idle), None)
            if oldest is None:
                self._drop("%d connections open, none idle", self.limits.total)
                return
            oldest._drop("evicted: %d connections open and this one is the longest waiting", self.limits.total)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        reg = self.registry
        reg.idle.pop(self, None)
        if self._client_key is not None:
            reg.per_client[self._client_key] -= 1
            if reg.per_client[self._client_key] <= 0:
                del reg.per_client[self._client_key]
            reg.total -= 1
            self._client_key = None
        super().connection_lost(exc)

    def _drop(self, why: str, *args: Any) -> None:
        self._dropped = True  # a drop inside the parser's callbacks: ignore what it still parses
        self._cancel()
        self.registry.idle.pop(self, None)
        client = self.client[0] if self.client else "?"
        log.info("connection from %s dropped: " + why, client, *args)
        self.transport.abort()

    # -- timers ------------------------------------------------------------------------

    def _arm(self, seconds: float, why: str) -> None:
        self._cancel()
        self._timer = self.loop.call_later(seconds, self._expire, why)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, why: str) -> None:
        self._timer = None
        if why == "body" and self.flow is not None and self.flow.read_paused:
            self._arm(self.limits.body_timeout, why)  # the app has not taken what came: not the client's fault
            return
        if why == "body":
            self._drop("request body stalled for %.0f s", self.limits.body_timeout)
        else:
            self._drop("request headers not complete within %.0f s", self.limits.header_timeout)

    def _await_headers(self) -> None:
        self.registry.idle[self] = None
        self._arm(self.limits.header_timeout, "headers")

    # -- parser callbacks (httptools) --------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # a following request on a kept-alive connection
            self._arm(self.limits.header_timeout, "headers")

    def on_headers_complete(self) -> None:
        if self._health_only and (self.parser.get_method() != b"GET" or self.url.split(b"?", 1)[0] != HEALTH_PATH):
            self._drop("more than %d connections from this address (past it, only GET /healthz)", self.limits.per_client)
            return
        self.registry.idle.pop(self, None)
        self._arm(self.limits.body_timeout, "body")  # cancelled at once when there is no body
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._dropped:
            return
        self._arm(self.limits.body_timeout, "body")
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel()
        if not self._dropped:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._cancel()
            self.registry.idle.pop(self, None)
            self.registry.idle[self] = None  # idle until the next request: uvicorn's keep-alive timer runs
