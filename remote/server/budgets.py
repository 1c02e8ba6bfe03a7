"""What one request may cost the database (issue 21, "Query budgets"). 200 label filters on
the problems list took 36-42 s on PostgreSQL, and ten such requests held the whole pool of
10 connections past its 60 s wait, so uploads and every other page waited with them.

- Label filters: at most `[server] max_label_filters` per request (api.label_params: 400
  `too_many_filters`).
- Statement timeout: every statement a request runs on PostgreSQL stops after
  `statement_timeout_seconds` (SET LOCAL at the start of each of the request's transactions;
  answered 503 `query_timeout`). Only requests have it: the fleet sweep, retention and the
  start-up rebuilds run without (they run once, not once per click). SQLite has no statement
  timeout; it serves one small server.
- The pool kept for everyone: at most `max_concurrent_reads` of a process's list and search
  requests (the pages and API reads that scan) run at once; the rest wait up to
  `read_wait_seconds` and are then answered 503 `busy` with Retry-After. With the default 6
  of a pool of 10, uploads, heartbeats, polls, sign-ins and detail pages always find a
  connection.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

# The statement timeout of the request this thread works for (None outside requests).
REQUEST_STATEMENT_SECONDS: contextvars.ContextVar[float | None] = contextvars.ContextVar("request_statement_seconds", default=None)
# List and search reads: pages and API calls whose cost grows with the data and the filters.
READS = frozenset({
    "/", "/bundles", "/problems", "/terminals", "/incidents",
    "/api/v1/bundles", "/api/v1/problems", "/api/v1/terminals", "/api/v1/stats", "/api/v1/incidents",
})  # fmt: skip
QUERY_CANCELED = "57014"  # PostgreSQL: canceling statement due to statement timeout


def install(engine: Engine) -> None:
    """Give a request's PostgreSQL transactions its statement timeout."""
    if engine.dialect.name != "postgresql":
        return

    @sa.event.listens_for(engine, "begin")
    def _budget(conn: sa.Connection) -> None:
        seconds = REQUEST_STATEMENT_SECONDS.get()
        if seconds:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")


def timed_out(exc: BaseException) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == QUERY_CANCELED


class QueryBudget:
    """ASGI middleware: the statement timeout for every request, a bound on concurrent reads."""

    def __init__(self, app: ASGIApp, settings: Any, respond: Any) -> None:
        self.app = app
        self.statement_seconds = settings.statement_timeout_seconds
        self.wait_seconds = settings.read_wait_seconds
        self.reads = asyncio.Semaphore(settings.max_concurrent_reads)
        self.respond = respond  # (status, code, detail, headers) -> an ASGI response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = REQUEST_STATEMENT_SECONDS.set(self.statement_seconds)
        try:
            if scope["method"] not in ("GET", "HEAD") or scope["path"] not in READS:
                await self.app(scope, receive, send)
                return
            try:
                await asyncio.wait_for(self.reads.acquire(), self.wait_seconds)
            except TimeoutError:
                detail = "too many searches at once; try again shortly"
                await self.respond(503, "busy", detail, {"Retry-After": "2"})(scope, receive, send)
                return
            try:
                await self.app(scope, receive, send)
            finally:
                self.reads.release()
        finally:
            REQUEST_STATEMENT_SECONDS.reset(token)
