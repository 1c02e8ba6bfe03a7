"""Webhooks: a row in webhook_deliveries is written (in the transaction of the event) before
anything is sent, and stays until the receiver answers 2xx; any server, after any restart,
sends what is due. Body: JSON {"id", "event", "created_at", "data"}; header
X-Posdiag-Signature: sha256=<hex HMAC-SHA256 of the body with [server.webhooks] secret>.

Deliveries run in a thread of their own (`Worker`), never in the fleet sweep's: a receiver
that answers slowly, forever or never costs at most `timeout_seconds` per delivery of that
thread (delivery.py), and the regression, missing and closing sweeps keep their interval.
The table is the queue, and it is bounded: past `max_queued_deliveries` waiting rows the
oldest are dropped (deleted, counted in posdiag_webhook_dropped_total, logged), so a
receiver that is down for weeks costs neither the database nor a flood when it returns."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import db
from remote.server.fleet import delivery, sql, timing
from remote.server.fleet.schema import webhook_deliveries
from remote.server.metrics import Metrics
from remote.server_settings import WebhookSettings

BATCH = 20
TICK_SECONDS = 0.5
log = logging.getLogger("posdiag.fleet")


def enqueue(conn: sa.Connection, settings: WebhookSettings, event: str, subject: str, data: dict[str, Any]) -> None:
    """Queue one delivery; the same event on the same subject is queued once."""
    if not settings.url or event not in settings.events:
        return
    now = db.now()
    dedupe = f"{event}:{subject}"[:200]
    body = json.dumps({"id": dedupe, "event": event, "created_at": now, "data": data}, ensure_ascii=False, sort_keys=True)
    row = {"dedupe": dedupe, "event": event, "body": body, "created_at": now, "next_at": now, "attempts": 0}
    conn.execute(sql.insert(conn, webhook_deliveries).on_conflict_do_nothing(index_elements=["dedupe"]), row)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_due(
    engine: Engine, settings: WebhookSettings, metrics: Metrics | None = None, stopping: threading.Event | None = None
) -> int:
    """Send what is due (until `stopping` is set); how many the receiver took."""
    if not settings.url:
        return 0
    now = db.now()
    d = webhook_deliveries.c
    with engine.connect() as conn:
        due = conn.execute(
            sa.select(d.id, d.event, d.body, d.attempts, d.next_at).where(d.delivered_at.is_(None), d.next_at <= now)
            .order_by(d.next_at, d.id).limit(BATCH)
        ).all()  # fmt: skip
    sent = 0
    for row in due:
        if stopping is not None and stopping.is_set():
            break
        lease = timing.shift(now, seconds=settings.timeout_seconds + 5)
        with db.writing(engine) as conn:  # claim it: another server may be looking at it too
            if not conn.execute(webhook_deliveries.update().where(d.id == row.id, d.next_at == row.next_at, d.delivered_at.is_(None)).values(next_at=lease)).rowcount:
                continue
        outcome = _post(settings, row.event, row.id, row.body.encode())
        if metrics is not None:
            metrics.webhook_attempt("refused" if outcome.refused else "failed" if outcome.error else "delivered")
        with db.writing(engine) as conn:
            if outcome.error is None:
                conn.execute(webhook_deliveries.update().where(d.id == row.id).values(delivered_at=db.now(), attempts=row.attempts + 1, last_error=None))
                sent += 1
            else:
                wait = min(settings.retry_max_seconds, settings.retry_min_seconds * 2**row.attempts)
                conn.execute(webhook_deliveries.update().where(d.id == row.id).values(
                    attempts=row.attempts + 1, next_at=timing.shift(db.now(), seconds=wait), last_error=outcome.error[:300]))  # fmt: skip
    return sent


def _post(settings: WebhookSettings, event: str, delivery_id: int, body: bytes) -> delivery.Outcome:
    headers = {
        "Content-Type": "application/json",
        "X-Posdiag-Event": event,
        "X-Posdiag-Delivery": str(delivery_id),
        "X-Posdiag-Signature": signature(settings.secret, body),
    }
    return delivery.post(settings.url, body, headers, settings.timeout_seconds, settings.allow_private_targets)


def drop_oldest(engine: Engine, keep: int) -> int:
    """Delete the oldest waiting deliveries beyond `keep`; how many this call deleted."""
    d = webhook_deliveries.c
    waiting = pending(engine)
    if waiting <= keep:
        return 0
    with db.writing(engine) as conn:
        oldest = sa.select(d.id).where(d.delivered_at.is_(None)).order_by(d.id).limit(waiting - keep)
        return conn.execute(webhook_deliveries.delete().where(d.id.in_(oldest.scalar_subquery()))).rowcount or 0


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(webhook_deliveries.c.delivered_at.is_(None))).scalar_one()


def queue_readings(engine: Engine) -> tuple[float, float]:
    """Waiting deliveries, and seconds since the oldest of them was queued (0: none)."""
    d = webhook_deliveries.c
    with engine.connect() as conn:
        count, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(d.created_at)).where(d.delivered_at.is_(None))).one()
    return float(count), max(0.0, timing.hours_between(oldest, db.now()) * 3600) if oldest else 0.0


class Worker:
    """The thread that sends webhooks, apart from the fleet sweep."""

    def __init__(self, engine: Engine, settings: WebhookSettings, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if metrics is not None:
            metrics.gauge("posdiag_webhook_queued", "Webhook deliveries waiting to be sent (every server reports the table).",
                          lambda: {"": queue_readings(engine)[0]})  # fmt: skip
            metrics.gauge("posdiag_webhook_queue_age_seconds", "Seconds the oldest waiting webhook delivery has waited.",
                          lambda: {"": queue_readings(engine)[1]})  # fmt: skip

    def start(self) -> None:
        if not self.settings.url:
            return
        self._thread = threading.Thread(target=self._run, daemon=True, name="webhooks")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.settings.timeout_seconds + 2)

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                dropped = drop_oldest(self.engine, self.settings.max_queued_deliveries)
                if dropped:
                    log.warning("webhooks: %d deliveries dropped, oldest first: more than %d were waiting",
                                dropped, self.settings.max_queued_deliveries)  # fmt: skip
                    if self.metrics is not None:
                        self.metrics.webhook_dropped.inc(dropped)
                deliver_due(self.engine, self.settings, self.metrics, self._stop)
            except sa.exc.SQLAlchemyError as exc:  # a database restart: try again next tick
                log.warning("webhooks: %s", exc)
