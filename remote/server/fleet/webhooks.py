"""Webhooks: a row in webhook_deliveries is written (in the transaction of the event) before
anything is sent, and stays until the receiver answers 2xx; any server, after any restart,
sends what is due. Body: JSON {"id", "event", "created_at", "data"}; header
X-Posdiag-Signature: sha256=<hex HMAC-SHA256 of the body with [server.webhooks] secret>."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import db
from remote.server.fleet import sql, timing
from remote.server.fleet.schema import webhook_deliveries
from remote.server_settings import WebhookSettings

BATCH = 20


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


def deliver_due(engine: Engine, settings: WebhookSettings, session: requests.Session) -> int:
    """Send what is due; how many the receiver took."""
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
        lease = timing.shift(now, seconds=settings.timeout_seconds + 5)
        with db.writing(engine) as conn:  # claim it: another server may be looking at it too
            if not conn.execute(webhook_deliveries.update().where(d.id == row.id, d.next_at == row.next_at, d.delivered_at.is_(None)).values(next_at=lease)).rowcount:
                continue
        error = _post(session, settings, row.event, row.id, row.body.encode())
        with db.writing(engine) as conn:
            if error is None:
                conn.execute(webhook_deliveries.update().where(d.id == row.id).values(delivered_at=db.now(), attempts=row.attempts + 1, last_error=None))
                sent += 1
            else:
                wait = min(settings.retry_max_seconds, settings.retry_min_seconds * 2**row.attempts)
                conn.execute(webhook_deliveries.update().where(d.id == row.id).values(
                    attempts=row.attempts + 1, next_at=timing.shift(db.now(), seconds=wait), last_error=error[:300]))  # fmt: skip
    return sent


def _post(session: requests.Session, settings: WebhookSettings, event: str, delivery: int, body: bytes) -> str | None:
    headers = {
        "Content-Type": "application/json",
        "X-Posdiag-Event": event,
        "X-Posdiag-Delivery": str(delivery),
        "X-Posdiag-Signature": signature(settings.secret, body),
    }
    try:
        answer = session.post(settings.url, data=body, headers=headers, timeout=settings.timeout_seconds, allow_redirects=False)
        answer.close()
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}"


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(webhook_deliveries.c.delivered_at.is_(None))).scalar_one()
