"""Retention: bundles older than `days`, or past the newest `max_per_terminal` of their
terminal, are removed, rows first and then the blobs no row names any more; audit log
entries older than `days` go with them.

One pass at a time across all servers (leases.exclusive). Rows go in batches; each batch's
digests are recorded in blob_orphans in the same transaction. A blob is then deleted
only inside a transaction that first locks its orphan record and finds no bundle naming it.

An upload of the same bytes may have found its blob present just before retention deleted
it: every bundle insert takes the digest's orphan record in its own transaction
(`claim_blobs`), waiting for a deletion in progress, and a record marked `deleted` tells it
to write the blob again before its row commits. So no committed row names a missing blob.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from remote.server import audit, daily, db, leases
from remote.server.blobs import BlobError, BlobStore
from remote.server.db import audit_log, blob_orphans, bundle_views, bundles
from remote.server.metrics import Metrics
from remote.server_settings import RetentionSettings

LOCK = "retention"
LEASE_SECONDS = 3600.0
MARKER_DAYS = 1  # a `deleted` record outlives any upload that could have begun before it
log = logging.getLogger("posdiag.retention")


@dataclass
class Plan:
    """What a pass removes (or removed)."""

    by_age: int = 0
    by_count: int = 0
    blobs: int = 0
    bytes: int = 0
    audit_entries: int = 0  # audit log entries older than `days` (audit.py), kept like the bundles
    errors: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.by_age + self.by_count


def claim_blobs(conn: sa.Connection, digests: set[str]) -> set[str]:
    """In the transaction that inserts rows naming `digests`: those retention may have
    deleted after the uploads stored them, so they must be written again."""
    if not digests:
        return set()
    return {digest for digest, state in conn.execute(_CLAIM, {"digests": sorted(digests)}) if state == "deleted"}


_CLAIM = (
    blob_orphans.delete()
    .where(blob_orphans.c.sha256.in_(sa.bindparam("digests", expanding=True)))
    .returning(blob_orphans.c.sha256, blob_orphans.c.state)
)


def _cutoff(days: int) -> str:
    return db.stamp(datetime.now(UTC) - timedelta(days=days))


def _expired(settings: RetentionSettings, limit: int) -> tuple[list[Any], list[Any]]:
    """(rows too old, rows past the per-terminal cap), each at most `limit`: id, sha256, size."""
    cols = (bundles.c.id, bundles.c.sha256, bundles.c.size)
    old = (
        sa.select(*cols).where(bundles.c.received_at < _cutoff(settings.days)).order_by(bundles.c.received_at).limit(limit)
        if settings.days
        else None
    )
    over = None
    if settings.max_per_terminal:
        rank = (
            sa.func.row_number()
            .over(partition_by=bundles.c.terminal_id, order_by=(bundles.c.received_at.desc(), bundles.c.id.desc()))
            .label("rank")
        )
        ranked = sa.select(*cols, bundles.c.received_at, rank)
        if settings.days:  # counted once: by age first
            ranked = ranked.where(bundles.c.received_at >= _cutoff(settings.days))
        sub = ranked.subquery()
        over = sa.select(sub.c.id, sub.c.sha256, sub.c.size).where(sub.c.rank > settings.max_per_terminal).limit(limit)
    return old, over  # type: ignore[return-value]


def plan(engine: Engine, settings: RetentionSettings) -> Plan:
    """What a pass would remove now (`gc --dry-run`)."""
    old, over = _expired(settings, 10**12)
    result = Plan()
    rows: dict[str, tuple[str, int]] = {}
    with engine.connect() as conn:
        for query, attr in ((old, "by_age"), (over, "by_count")):
            if query is not None:
                found = conn.execute(query).all()
                setattr(result, attr, len(found))
                rows.update({r.id: (r.sha256, r.size) for r in found})
        sizes = {digest: size for digest, size in rows.values()}
        for digest in conn.execute(sa.select(blob_orphans.c.sha256).where(blob_orphans.c.state == "pending")).scalars():
            sizes.setdefault(digest, 0)
        digests = list(sizes)
        for i in range(0, len(digests), 500):
            named = conn.execute(
                sa.select(bundles.c.id, bundles.c.sha256).where(bundles.c.sha256.in_(digests[i : i + 500]))
            ).all()
            for r in named:
                if r.id not in rows:
                    sizes.pop(r.sha256, None)
    result.blobs = len(sizes)
    result.bytes = sum(sizes.values())
    if settings.days:
        with engine.connect() as conn:
            old_entries = sa.select(sa.func.count()).select_from(audit_log).where(audit_log.c.at < _cutoff(settings.days))
            result.audit_entries = conn.execute(old_entries).scalar_one()
    return result


def _remove_rows(engine: Engine, query: Any) -> tuple[int, int]:
    """One batch: (rows removed, bytes they named); their digests become orphans."""
    with engine.connect() as conn:
        found = conn.execute(query).all()
    if not found:
        return 0, 0
    insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(blob_orphans)
    since = db.now()
    with db.writing(engine) as conn:
        ids = [r.id for r in found]
        conn.execute(bundle_views.delete().where(bundle_views.c.bundle_id.in_(ids)))  # its redacted text goes too
        gone = conn.execute(
            bundles.delete().where(bundles.c.id.in_(ids)).returning(bundles.c.created_at, *(bundles.c[c] for c in daily.DIMS.values()))
        ).mappings().all()  # fmt: skip
        daily.count(conn, [dict(r) for r in gone], -1)
        removed = len(gone)
        conn.execute(
            insert.on_conflict_do_update(index_elements=["sha256"], set_={"state": "pending", "since": since}),
            [{"sha256": d, "state": "pending", "since": since} for d in {r.sha256 for r in found}],
        )
    return removed, sum(r.size for r in found)


def _remove_blob(engine: Engine, blobs: BlobStore, digest: str) -> bool:
    """Delete one orphan's blob unless a row names it; True if deleted. The orphan record is
    locked first (on SQLite that first write takes the database's write lock)."""
    with db.writing(engine) as conn:
        mine = conn.execute(
            blob_orphans.update()
            .where(blob_orphans.c.sha256 == digest, blob_orphans.c.state == "pending")
            .values(state="deleting")
        ).rowcount
        if not mine:
            return False
        named = conn.execute(sa.select(sa.func.count()).select_from(bundles).where(bundles.c.sha256 == digest)).scalar()
        if named:
            conn.execute(blob_orphans.delete().where(blob_orphans.c.sha256 == digest))
            return False
        blobs.delete(digest)  # a failure rolls the record back to pending
        conn.execute(
            blob_orphans.update().where(blob_orphans.c.sha256 == digest).values(state="deleted", since=db.now())
        )
    return True


def run_pass(engine: Engine, blobs: BlobStore, settings: RetentionSettings, metrics: Metrics | None = None) -> Plan | None:
    """One pass, if no other server is running one (None then)."""
    with leases.exclusive(engine, LOCK, LEASE_SECONDS) as mine:
        if not mine:
            return None
        done = Plan()
        old, over = _expired(settings, settings.batch)
        for query, attr in ((old, "by_age"), (over, "by_count")):
            while query is not None:
                removed, size = _remove_rows(engine, query)
                if not removed:
                    break
                setattr(done, attr, getattr(done, attr) + removed)
                done.bytes += size
                if metrics:
                    metrics.removed(removed, 0)
        done.blobs = _remove_orphans(engine, blobs, settings.batch, done, metrics)
        done.audit_entries = audit.expire(engine, settings.days, settings.batch)
        with db.writing(engine) as conn:
            conn.execute(
                blob_orphans.delete().where(
                    blob_orphans.c.state == "deleted", blob_orphans.c.since < _cutoff(MARKER_DAYS)
                )
            )
    return done


def _remove_orphans(engine: Engine, blobs: BlobStore, batch: int, done: Plan, metrics: Metrics | None) -> int:
    deleted = 0
    after = ""
    while True:
        with engine.connect() as conn:
            digests = conn.execute(
                sa.select(blob_orphans.c.sha256)
                .where(blob_orphans.c.state == "pending", blob_orphans.c.sha256 > after)
                .order_by(blob_orphans.c.sha256)
                .limit(batch)
            ).scalars().all()
        if not digests:
            return deleted
        for digest in digests:
            try:
                gone = _remove_blob(engine, blobs, digest)
            except BlobError as exc:
                done.errors.append(str(exc))
                continue
            deleted += gone
            if gone and metrics:
                metrics.removed(0, 1)
        after = digests[-1]


class Janitor:
    """Runs a pass every `interval_minutes` in a daemon thread of `posdiag-support serve`."""

    def __init__(self, engine: Engine, blobs: BlobStore, settings: RetentionSettings, metrics: Metrics) -> None:
        self.engine, self.blobs, self.settings, self.metrics = engine, blobs, settings, metrics
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        if self.settings.days or self.settings.max_per_terminal:
            self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.interval_minutes * 60):
            try:
                done = run_pass(self.engine, self.blobs, self.settings, self.metrics)
            except (sa.exc.SQLAlchemyError, BlobError) as exc:
                log.warning("retention pass failed: %s", str(exc).splitlines()[0])
                continue
            if done and (done.rows or done.blobs):
                log.info("retention removed %d bundles and %d blobs", done.rows, done.blobs)
