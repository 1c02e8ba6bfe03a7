"""Sign-in by password, limited before hashing and hashed off the event loop.

An attempt goes: the minute-long cache of verified pairs (HTTP basic clients); what this
process already knows is refused (a key found over its limit, remembered up to 5 s); then,
in a small thread pool of its own (503 with Retry-After when that pool's queue is full),
the attempt is counted against its user name and its client address in the database,
shared by every server (429 with Retry-After when either is past its limit: no scrypt is
spent), scrypt runs, and a success clears the user's count. Counting in the pool keeps a
flood's database writes to one or two at a time, off the connections other requests need. A flood of wrong passwords thus costs a dict
lookup and a one-second sleep per attempt once it is over the limit, and never blocks the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remote.server.service import Service, User

REFUSAL_DELAY_SECONDS = 1.0


class Refused(Exception):
    """429 (too many failures) or 503 (the hashing pool is full), with Retry-After."""

    def __init__(self, status: int, code: str, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.retry_after = max(1, math.ceil(retry_after))


class HashPool:
    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="scrypt", initializer=_lower_priority)
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


def _lower_priority() -> None:
    """Linux schedules threads on their own: a hashing thread at nice +10 yields the CPU to the
    event loop and the request threads of this process (raising niceness needs no privilege)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10))


async def sign_in(srv: Service, name: str, password: str, host: str | None) -> User | None:
    """The user, None for a wrong pair; Refused when this name or address must wait."""
    cached = srv.cached_user(name, password)
    if cached is not None:
        return cached
    wait, user = srv.known_wait(name, host), None
    if wait <= 0:
        wait, user = await srv.hash_pool.run(srv.attempt, name, password, host)
    if wait > 0:
        # Held before answering: a client that ignores Retry-After gets one answer per
        # second per connection, and costs the server a sleeping coroutine, not CPU.
        await asyncio.sleep(REFUSAL_DELAY_SECONDS)
        raise Refused(429, "too_many_attempts", "too many failed sign-ins; wait before trying again", wait)
    return user
