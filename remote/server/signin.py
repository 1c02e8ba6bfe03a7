"""Sign-in by password, limited before hashing and hashed off the event loop.

An attempt goes: the minute-long cache of verified pairs (HTTP basic clients); the failure
counts of its user name and its client address, kept in the database so every server shares
them (429 with Retry-After when either is at its limit: no scrypt is spent); scrypt in a
small thread pool of its own (503 with Retry-After when that pool's queue is full); then
the count is raised, or the user's is cleared. A flood of wrong passwords thus costs one
indexed read per attempt once it is over the limit, and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from remote.server.service import Service, User


class Refused(Exception):
    """429 (too many failures) or 503 (the hashing pool is full), with Retry-After."""

    def __init__(self, status: int, code: str, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.retry_after = max(1, math.ceil(retry_after))


class HashPool:
    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="scrypt")
        self._slots = threading.BoundedSemaphore(workers + queue)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._slots.acquire(blocking=False):
            raise Refused(503, "busy", "too many sign-ins at once; retry shortly", 1)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._slots.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def sign_in(srv: Service, name: str, password: str, host: str | None) -> User | None:
    """The user, None for a wrong pair; Refused when this name or address must wait."""
    cached = srv.cached_user(name, password)
    if cached is not None:
        return cached
    wait = await run_in_threadpool(srv.signin_wait, name, host)
    if wait > 0:
        raise Refused(429, "too_many_attempts", "too many failed sign-ins; wait before trying again", wait)
    user = await srv.hash_pool.run(srv.verify_password, name, password)
    await run_in_threadpool(srv.signin_result, name, host, user is not None)
    return user
