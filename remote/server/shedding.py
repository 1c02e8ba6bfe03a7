"""Shedding load the night a carrier comes back (issue 22): uploads and heartbeats are
answered 503 with Retry-After, at once, instead of piling up until the server falls over.

- The fleet queue (fleet_queue.py) holds more than `[server] fleet_queue_max` arrivals:
  the fleet is that far behind, and taking more only makes it later (503 `fleet_behind`).
- The database: at most `ingest_slots` uploads and heartbeats of a process use it at once
  (fewer than its pooled connections, so pages, polls and /healthz always find one); at
  most `ingest_max_waiting` wait for a turn, each at most `ingest_wait_seconds` (503 `busy`).

Retry-After is spread between `shed_retry_after_seconds` and twice that, so a fleet told
to come back does not come back in the same second (the agent adds its own jitter).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

from remote.server.ingest import IngestError


def retry_after(settings: Any) -> int:
    base = settings.shed_retry_after_seconds
    return random.randint(base, 2 * base)


def check_queue(settings: Any, depth: int) -> None:
    """503 while the fleet queue (as this process's drainer last read it) is past its bound."""
    if depth >= settings.fleet_queue_max:
        raise IngestError(503, "fleet_behind", f"the server is {depth} arrivals behind; retry later", retry_after(settings))


class IngestGate:
    """Turns at the database for uploads and heartbeats, in one process (its event loop)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.waiting = 0
        self.busy = 0
        self.refused = 0
        self._slots: asyncio.Semaphore | None = None

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        s = self.settings
        if self._slots is None:
            self._slots = asyncio.Semaphore(s.ingest_slots)
        if self.waiting >= s.ingest_max_waiting:
            self.refused += 1
            raise IngestError(503, "busy", "too many uploads and heartbeats wait for the database; retry later", retry_after(s))
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), s.ingest_wait_seconds)
        except TimeoutError:
            self.refused += 1
            raise IngestError(503, "busy", "no turn at the database in time; retry later", retry_after(s)) from None
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._slots.release()
