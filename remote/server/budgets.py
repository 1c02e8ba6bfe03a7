"""What one request may cost the database (issue 21, "Query budgets"). 200 label filters on
the problems list took 36-42 s on PostgreSQL, and ten such requests held the whole pool of
10 connections past its 60 s wait, so uploads and every other page waited with them.

- Label filters: at most `[server] max_label_filters` per request (api.label_params: 400
  `too_many_filters`).
- Statement timeout: every statement a request runs on PostgreSQL stops after
  `statement_timeout_seconds` (set on the pooled connection when a request checks it out
  and background work had it, or the other way round; answered 503 `query_timeout`). Only requests have it: the fleet sweep, retention and the
  start-up rebuilds run without (they run once, not once per click). SQLite has no statement
  timeout; it serves one small server.
- The pool kept for everyone: at most `max_concurrent_reads` database connections of a
  process serve list and search requests (the pages and API reads that scan) at once; a
  list that cannot get one within `read_wait_seconds` is answered 503 `busy` with
  Retry-After. The bound is taken when such a request checks a connection out of the pool,
  not when it arrives, so requests refused at sign-in (a password flood on a list's URL)
  hold none. With the default 6 of a pool of 10, uploads, heartbeats, polls, sign-ins and
  detail pages always find a connection.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

# The statement timeout of the request this thread works for (None outside requests), and
# whether it is a list or search read; set by QueryBudget, inherited by the request's threads.
REQUEST_STATEMENT_SECONDS: contextvars.ContextVar[float | None] = contextvars.ContextVar("request_statement_seconds", default=None)
READ_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("read_request", default=False)
# List and search reads: pages and API calls whose cost grows with the data and the filters.
READS = frozenset({
    "/", "/bundles", "/problems", "/terminals", "/incidents",
    "/api/v1/bundles", "/api/v1/problems", "/api/v1/terminals", "/api/v1/stats", "/api/v1/incidents",
})  # fmt: skip
QUERY_CANCELED = "57014"  # PostgreSQL: canceling statement due to statement timeout


class ReadsBusy(Exception):
    """Every connection list reads may hold is in use, and none came free in time (503)."""


def install(engine: Engine, settings: Any) -> None:
    """The statement timeout of a request's PostgreSQL transactions, and the bound on the
    connections list reads hold."""
    slots = threading.BoundedSemaphore(settings.max_concurrent_reads)
    held: dict[int, int] = {}  # thread -> connections it has checked out for a list read
    lock = threading.Lock()

    @sa.event.listens_for(engine, "checkout")
    def _take_slot(_dbapi: Any, record: Any, _proxy: Any) -> None:
        if not READ_REQUEST.get():
            return
        me = threading.get_ident()
        with lock:
            nested = held.get(me, 0) > 0  # a second connection of the same request: same slot
        if not nested and not slots.acquire(timeout=settings.read_wait_seconds):
            raise ReadsBusy(f"{settings.max_concurrent_reads} list requests are using the database")
        with lock:
            held[me] = held.get(me, 0) + 1
        record.info["read_slot"] = me

    @sa.event.listens_for(engine, "checkin")
    def _give_slot(_dbapi: Any, record: Any) -> None:
        owner = record.info.pop("read_slot", None)
        if owner is None:
            return
        with lock:
            held[owner] -= 1
            last = held[owner] == 0
            if last:
                del held[owner]
        if last:
            slots.release()

    if engine.dialect.name != "postgresql":
        return

    @sa.event.listens_for(engine, "checkout")
    def _budget(dbapi: Any, record: Any, _proxy: Any) -> None:
        seconds = REQUEST_STATEMENT_SECONDS.get()
        want = max(1, int(seconds * 1000)) if seconds else 0
        if record.info.get("statement_timeout_ms", 0) != want:
            set_statement_timeout(dbapi, want)
            record.info["statement_timeout_ms"] = want


def set_statement_timeout(dbapi: Any, ms: int) -> None:
    """The connection's statement timeout for every later transaction, in one round trip
    outside any transaction (a SET inside one would be undone by its rollback). Set when a
    connection goes from background work to a request or back, not per transaction: a
    `SET LOCAL` at every BEGIN cost each upload and heartbeat a round trip per transaction
    (9.5 % of PostgreSQL ingest, issue 22)."""
    dbapi.autocommit = True
    try:
        with dbapi.cursor() as cur:
            cur.execute(f"SET statement_timeout = {int(ms)}")
    finally:
        dbapi.autocommit = False


def timed_out(exc: BaseException) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == QUERY_CANCELED


class QueryBudget:
    """ASGI middleware: marks every request with its statement timeout, and list and search
    reads as such (install() acts on both when the request uses the database)."""

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app = app
        self.statement_seconds = settings.statement_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout = REQUEST_STATEMENT_SECONDS.set(self.statement_seconds)
        read = READ_REQUEST.set(scope["method"] in ("GET", "HEAD") and scope["path"] in READS)
        try:
            await self.app(scope, receive, send)
        finally:
            READ_REQUEST.reset(read)
            REQUEST_STATEMENT_SECONDS.reset(timeout)
