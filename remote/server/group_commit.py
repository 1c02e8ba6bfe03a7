"""Group commit (issue 22): the writes of many uploads, or of many heartbeats, in one
transaction of one of a process's writer threads.

An upload's own transaction was seven statements and a commit, each statement paid for in
SQLAlchemy's Python, and every upload took a turn at the database (on SQLite, at its one
write lock). Here a request hands its prepared rows to the writers and awaits the result;
a writer takes whatever has gathered while its previous transaction ran (at most
`max_batch`) and writes it at once: one commit, and each statement executed once for all
rows. No request waits for a batch to fill: a lone upload is written alone.

`write` is given the batch and returns one result (or exception) per item, or raises: then
every item is written again on its own (`write` with a batch of one), so one bad item, an
id another server stored meanwhile or a quota race, costs only itself.

Bounded: with `[server] ingest_max_waiting` items waiting, the next is answered 503 `busy`
at once, and an item not taken within `ingest_wait_seconds` is withdrawn and answered 503
`busy` (neither is written; the agent retries after Retry-After).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from remote.server import budgets, shedding
from remote.server.ingest import IngestError

if TYPE_CHECKING:
    from remote.server.metrics import Metrics

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger("posdiag.group_commit")


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
        settings: Any,
        metrics: Metrics | None = None,
        writers: int = 1,
        max_batch: int = 64,
    ) -> None:
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self.max_batch = max_batch
        self.batches = 0  # transactions written, for the metrics
        self.items = 0
        self._write = write
        self._queue: queue.SimpleQueue[tuple[Item, concurrent.futures.Future[Result]] | None] = queue.SimpleQueue()
        self.writers = writers
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def submit(self, item: Item) -> Result:
        """The item's result once its batch has committed (or its exception)."""
        s = self.settings
        if self._queue.qsize() >= s.ingest_max_waiting:
            raise IngestError(503, "busy", "too many uploads and heartbeats wait for the database; retry later", shedding.retry_after(s))
        self._start()
        future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        self._queue.put((item, future))
        waiting = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), s.ingest_wait_seconds)
        except TimeoutError:
            if future.cancel():  # not taken yet: withdrawn, never written
                raise IngestError(503, "busy", "no turn at the database in time; retry later", shedding.retry_after(s)) from None
            return await waiting  # being written: its answer is the commit's

    def write_now(self, item: Item) -> Result:
        """The item written in a transaction of its own, on the caller's thread."""
        result = self._write([item])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def stop(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(10)

    def _start(self) -> None:
        if not self._threads:
            with self._lock:
                while len(self._threads) < self.writers:
                    thread = threading.Thread(target=self._run, daemon=True, name=f"group-commit-{self.name}")
                    thread.start()
                    self._threads.append(thread)

    def _run(self) -> None:
        budgets.REQUEST_STATEMENT_SECONDS.set(self.settings.statement_timeout_seconds)  # its transactions are requests'
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            taken = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            if taken:
                self._commit(taken)

    def _commit(self, taken: list[tuple[Item, concurrent.futures.Future[Result]]]) -> None:
        try:
            results = self._write([item for item, _ in taken])
        except Exception as exc:  # noqa: BLE001 - which item: each is written alone below
            if len(taken) == 1:
                taken[0][1].set_exception(exc)
                return
            log.info("%s: a batch of %d could not be written together (%s); writing each alone", self.name, len(taken), type(exc).__name__)
            for item, future in taken:
                try:
                    future.set_result(self.write_now(item))
                except Exception as one:  # noqa: BLE001 - the item's own answer
                    future.set_exception(one)
            self._count(len(taken), len(taken))
            return
        self._count(1, len(taken))
        for (_, future), result in zip(taken, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _count(self, transactions: int, items: int) -> None:
        self.batches += transactions
        self.items += items
        if self.metrics is not None:
            self.metrics.group_committed(self.name, transactions, items)
