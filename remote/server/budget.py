"""Bytes that all uploads of one server process hold at once (bodies and the members read).

An upload reserves its worst case before its body is read and gives it back when done; one
that cannot get it within the wait is refused with 503 and Retry-After, so many concurrent
uploads queue instead of growing the process without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

from remote.server.ingest import IngestError

POLL_SECONDS = 0.05


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def _take(self, n: int) -> bool:
        with self._lock:
            # One upload larger than the whole budget may still run, alone.
            if self.used and self.used + n > self.limit:
                return False
            self.used += n
            return True

    def _give(self, n: int) -> None:
        with self._lock:
            self.used -= n

    @contextlib.asynccontextmanager
    async def held(self, n: int, wait_seconds: float) -> AsyncIterator[None]:
        deadline = time.monotonic() + wait_seconds
        while not self._take(n):
            if time.monotonic() >= deadline:
                raise IngestError(503, "busy", "the server is unpacking other uploads; retry later", retry_after=5)
            await asyncio.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            self._give(n)
