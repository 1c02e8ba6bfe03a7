"""The fleet's arrivals queue (issue 22): what the fleet counts, written durably in the
upload's or the heartbeat's own transaction, counted by a worker thread after the answer.

Counting a bundle into the inventory, its problem and the outage detector took a third to a
half of an upload's time, and two uploads locked the same rollup rows crosswise. Now an
upload writes one queue row beside its bundle row (one transaction: a stored bundle is
always queued, a queued one always stored) and a heartbeat writes one queue row, and each is
answered. One drainer at a time across every server (leases.py) takes the rows oldest
first and counts them through the fleet's own entries (Fleet.count: Counting.bundle and
.heartbeat, what Fleet.on_bundle and .on_heartbeat do), CHUNK rows in one transaction that
also deletes them: their commit and the work they share (a problem's breakdown, closing
quiet outages) are paid once per chunk, with the figures of counting them one by one:

- idempotent: on_bundle counts a bundle once (bundle_fleet's key); a heartbeat already
  folded (its row in `heartbeats`, same terminal, event and receipt time) is skipped. A
  drainer killed between counting and deleting leaves rows its successor skips.
- event time: the counting judges the bundle's created_at and the heartbeat's sent_at, as
  before, never when the drainer reaches them.
- bounded: depth and lag are exported (posdiag_fleet_queue_depth, _lag_seconds); past
  `[server] fleet_queue_max` entries, uploads and heartbeats are answered 503 with
  Retry-After (shedding.py) until the drainer catches up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import db, ingest, leases
from remote.server.db import TIME, metadata
from remote.server.fleet.models import Heartbeat
from remote.server.fleet.schema import heartbeats

if TYPE_CHECKING:
    from remote.server.fleet.engine import Counting, Fleet
    from remote.server.metrics import Metrics

log = logging.getLogger("posdiag.fleet_queue")
LEASE = "fleet-queue"
LEASE_SECONDS = 30.0
TICK_SECONDS = 0.2  # how often an idle drainer looks, and a waiting one asks for the lease
# Nudged by an arrival, the drainer waits this long for more before it looks: woken by each
# upload at once, it counted chunks of one, and a chunk's own statements (its commit, the
# problems' rows, quiet outages, the lease, the look) were half the drainer's time.
GATHER_SECONDS = 0.1
BATCH = 200  # rows read at once
CHUNK = 16  # rows counted in one transaction (on SQLite, uploads wait for its write lock meanwhile)
ROUND_SECONDS = 5.0  # a drainer gives the lease back this often (SQLite's lease is not renewed)

fleet_queue = sa.Table(
    "fleet_queue",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # bundle | heartbeat
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON: what the fleet's entry is called with
    sa.Column("enqueued_at", TIME, nullable=False),
)


def bundle_entry(bundle: ingest.Bundle, record: dict[str, Any], clamped: bool) -> dict[str, Any]:
    """The queue row of a bundle just stored: its record, the manifest and probes.json as
    already read (the archive is never read again), and whether its time was clamped."""
    probes = bundle.scan.kept.get("probes.json")
    payload = {
        "record": record,
        "clamped": clamped,
        "manifest": bundle.manifest_raw,
        "probes": probes.decode("utf-8", "replace") if probes is not None else None,
    }
    return _row("bundle", record["terminal_id"], payload)


def heartbeat_entry(beat: Heartbeat, event_at: str, clamped: bool, received_at: str) -> dict[str, Any]:
    """Its texts masked before they are written (the fleet masks them again, to the same)."""
    texts = {k: ingest.shown(getattr(beat, k)) for k in ("model", "firmware", "app_version", "agent_version")}
    masked = beat.model_copy(update=dict(texts, labels={k: ingest.shown(v) for k, v in beat.labels.items()}))
    payload = {"beat": masked.model_dump(), "event_at": event_at, "clamped": clamped, "received_at": received_at}
    return _row("heartbeat", beat.terminal_id, payload)


def _row(kind: str, terminal_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "terminal_id": terminal_id, "payload": json.dumps(payload), "enqueued_at": db.now()}


def add(conn: sa.Connection, entries: list[dict[str, Any]]) -> None:
    conn.execute(fleet_queue.insert(), entries)


def enqueue(engine: Engine, entries: Sequence[dict[str, Any]]) -> list[None]:
    """Heartbeats' durable write (group_commit.py): once this returns, they are folded in
    later even if the server is killed now."""
    with db.writing(engine) as conn:
        conn.execute(fleet_queue.insert(), list(entries))
    return [None] * len(entries)


@dataclass(frozen=True)
class Backlog:
    depth: int
    lag_seconds: float  # age of the oldest entry


def backlog(engine: Engine) -> Backlog:
    with engine.connect() as conn:
        depth, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(fleet_queue.c.enqueued_at))).one()
    lag = (datetime.now(UTC) - db.parse_time(oldest)).total_seconds() if oldest else 0.0
    return Backlog(depth, max(0.0, lag))


def _bundle_of(payload: dict[str, Any]) -> ingest.Bundle:
    """The parts of the bundle the fleet reads (manifest, probes.json), as they were stored."""
    raw = payload["manifest"]
    probes = payload["probes"]
    scan = ingest.Scan([], {}, {} if probes is None else {"probes.json": probes.encode("utf-8")}, {})
    manifest = ingest.Manifest.model_validate(raw)
    return ingest.Bundle(manifest, raw, {}, db.parse_time(manifest.created_at), scan)


def _folded(conn: sa.Connection, beats: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Of the heartbeats (queue payloads), those in `heartbeats` already (counted, their
    queue rows not yet deleted), as (terminal, event time, receipt time): one read for a chunk."""
    if not beats:
        return set()
    h = heartbeats.c
    found = conn.execute(
        sa.select(h.terminal_id, h.sent_at, h.received_at).where(
            h.terminal_id.in_(sorted({b["beat"]["terminal_id"] for b in beats})),
            h.received_at.in_(sorted({b["received_at"] for b in beats})),
        )
    )  # fmt: skip
    return {tuple(r) for r in found}


class Drainer:
    """The worker thread of one server process; one of all processes holds the lease and drains."""

    def __init__(self, engine: Engine, fleet: Fleet, metrics: Metrics | None = None, threads: int = 4, chunk: int = CHUNK) -> None:
        self.engine = engine
        self.chunk = chunk  # rows counted in one transaction
        self.fleet = fleet
        self.threads = threads if engine.dialect.name == "postgresql" else 1
        self._executor: ThreadPoolExecutor | None = None
        self.metrics = metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last = Backlog(0, 0.0)  # as last read (by this process's drainer thread)
        self.counted = 0
        self.failed = 0
        if metrics is not None:
            metrics.gauge("posdiag_fleet_queue_depth", "Arrivals (bundles, heartbeats) waiting to be counted into the fleet.",
                          lambda: {"": float(backlog(self.engine).depth)})  # fmt: skip
            metrics.gauge("posdiag_fleet_queue_lag_seconds", "Age of the oldest arrival waiting to be counted into the fleet.",
                          lambda: {"": backlog(self.engine).lag_seconds})  # fmt: skip

    def look(self) -> Backlog:
        """Read the queue's depth and lag (what shedding judges by, until the next look)."""
        self.last = backlog(self.engine)
        return self.last

    def nudge(self) -> None:
        """Something was queued by this process: look in GATHER_SECONDS rather than at the
        next tick (what arrives meanwhile is counted in the same chunk)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="fleet-queue")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(TICK_SECONDS):
                self._stop.wait(GATHER_SECONDS)
            self._wake.clear()
            try:
                if self.look().depth:
                    with leases.exclusive(self.engine, LEASE, LEASE_SECONDS) as mine:
                        if mine:
                            self.drain(ROUND_SECONDS)
            except sa.exc.SQLAlchemyError as exc:  # a database restart: the rows wait for the next tick
                log.warning("fleet queue: %s", exc)

    def drain(self, seconds: float = float("inf")) -> int:
        """Count queued arrivals, oldest first, for about `seconds` or until none is left;
        how many were taken. Call only while holding the lease (or alone, in a test).

        On PostgreSQL a batch is shared out among `threads` by terminal (a terminal's
        arrivals stay in order, in one thread): counting a bundle is some twenty statements,
        mostly waiting on the database, and two terminals' counts seldom meet (the fleet
        retries a deadlock). SQLite admits one writer: one thread."""
        deadline = time.monotonic() + seconds
        taken = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(fleet_queue).order_by(fleet_queue.c.id).limit(BATCH)).mappings().all()
            if not rows:
                break
            lanes: dict[int, list[Any]] = {}
            for row in rows:
                lanes.setdefault(hash(row["terminal_id"]) % self.threads, []).append(row)
            if len(lanes) == 1:
                done = self._lane(next(iter(lanes.values())), deadline)
            else:
                done = [i for part in self._pool().map(lambda lane: self._lane(lane, deadline), lanes.values()) for i in part]
            taken += len(done)
        return taken

    def _lane(self, rows: list[Any], deadline: float) -> list[int]:
        done: list[int] = []
        for i in range(0, len(rows), self.chunk):
            if time.monotonic() >= deadline and done:
                break
            chunk = rows[i : i + self.chunk]
            self._apply_many(chunk)
            done += [row["id"] for row in chunk]
        return done
    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="fleet-queue-lane")
        return self._executor

    def _delete(self, ids: list[int]) -> None:
        if ids:
            with db.writing(self.engine) as conn:
                conn.execute(fleet_queue.delete().where(fleet_queue.c.id.in_(ids)))

    def _apply_many(self, rows: list[Any]) -> None:
        """Count the rows and delete them in one transaction (Fleet.count: the same figures
        as one by one, at a fraction of the statements and commits). When one of them
        cannot be counted, each is counted on its own, so only that one is dropped."""
        ids = [row["id"] for row in rows]

        def work(counting: Counting) -> None:
            self._count(counting, rows)
            counting.conn.execute(fleet_queue.delete().where(fleet_queue.c.id.in_(ids)))

        try:
            self.fleet.count(work)
            self.counted += len(rows)
            return
        except sa.exc.OperationalError:
            raise  # the database, not a row: keep them for the next round
        except Exception as exc:  # which row: found one by one below, and logged there
            log.warning("fleet queue: a chunk of %d rows could not be counted (%s: %s); counting them one by one", len(rows), type(exc).__name__, exc)
        for row in rows:
            self._apply(row)
        self._delete(ids)

    def _apply(self, row: Any) -> None:
        """Count one row in a transaction of its own (not deleted: the caller does)."""
        try:
            self.fleet.count(lambda counting: self._count(counting, [row]))
            self.counted += 1
        except sa.exc.OperationalError:
            raise  # the database, not the row: keep it for the next round
        except Exception:  # a row the fleet cannot count must not stop every row after it
            self.failed += 1
            if self.metrics is not None:
                self.metrics.fleet_queue_dropped.inc()
            log.exception("fleet queue: entry %s (%s of %s) dropped", row["id"], row["kind"], row["terminal_id"])

    def _count(self, counting: Counting, rows: list[Any]) -> None:
        """Count the rows in order, each payload read once; a heartbeat already folded is skipped."""
        payloads = [(row["kind"], json.loads(row["payload"])) for row in rows]
        folded = _folded(counting.conn, [payload for kind, payload in payloads if kind == "heartbeat"])
        for kind, payload in payloads:
            if kind == "bundle":
                counting.bundle(_bundle_of(payload), payload["record"], payload["clamped"])
            elif (payload["beat"]["terminal_id"], payload["event_at"], payload["received_at"]) not in folded:
                beat = Heartbeat.model_validate(payload["beat"])
                counting.heartbeat(beat, payload["event_at"], payload["clamped"], payload["received_at"])

    def wait_drained(self, timeout: float = 30.0) -> bool:
        """True once nothing waits in the queue (tests, and a server shutting down)."""
        deadline = time.monotonic() + timeout
        while backlog(self.engine).depth:
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True
