"""Sign-in by password, limited before hashing and hashed off the event loop.

An attempt goes: the minute-long cache of verified pairs (HTTP basic clients), good only
while the user's identity and generation in the database are those it was verified at; what this
process already knows is refused (a key found over its limit, remembered up to 5 s); then
the attempt is counted against its user name and its client address in the database, shared
by every server, in a small pool of its own (429 with Retry-After when either is past its
limit: no scrypt is spent); only then does scrypt run, in the hashing pool, and a success
clears the user's count.

Every attempt is counted before it can be refused for any other reason (issue 21: a flood
whose attempts found the hashing queue full got an instant 503, uncounted, so the address
limit never tripped, and other users' first sign-ins met the full queue too). The hashing
queue holds at most half its places for one client address, so a flood from one address
leaves room for everyone else's first sign-in. Every refusal, 429 or 503, is held a second
before it is sent: a client that ignores Retry-After gets about one answer per second per
connection and costs the server a sleeping coroutine, not CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi.concurrency import run_in_threadpool

from remote.server.auth import address_key

if TYPE_CHECKING:
    from remote.server.service import Service, User

REFUSAL_DELAY_SECONDS = 1.0
COUNTING_QUEUE = 256  # attempts waiting to be counted (one database upsert each)


class Refused(Exception):
    """429 (too many failures) or 503 (a pool's queue is full), with Retry-After."""

    def __init__(self, status: int, code: str, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.retry_after = max(1, math.ceil(retry_after))


class BoundedPool:
    """Threads with a bounded queue, and at most `per_key` calls of one key queued or running
    (0: no such bound); a call that does not fit is Refused 503 at once."""

    def __init__(self, workers: int, queue: int, per_key: int = 0, lower_priority: bool = False, name: str = "pool") -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=_lower_priority if lower_priority else None)
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._per_key = per_key
        self._keys: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., Any], *args: Any, key: str = "") -> Any:
        with self._lock:
            if self._per_key and self._keys[key] >= self._per_key:
                raise Refused(503, "busy", "this address has sign-ins waiting already; retry shortly", 1)
            if not self._slots.acquire(blocking=False):
                raise Refused(503, "busy", "too many sign-ins at once; retry shortly", 1)
            self._keys[key] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            with self._lock:
                self._keys[key] -= 1
                if self._keys[key] <= 0:
                    del self._keys[key]
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
    remembered = srv.remembered_pair(name, password)
    if remembered is not None:
        current = await run_in_threadpool(srv.current_user, *remembered)
        if current is not None:
            return current
    try:
        wait = srv.known_wait(name, host)
        if wait <= 0:
            wait = await srv.count_pool.run(srv.signin_attempt, name, host)
        if wait > 0:
            raise Refused(429, "too_many_attempts", "too many failed sign-ins; wait before trying again", wait)
        return await srv.hash_pool.run(srv.check_password, name, password, host, key=address_key(host))
    except Refused:
        await asyncio.sleep(REFUSAL_DELAY_SECONDS)
        raise
