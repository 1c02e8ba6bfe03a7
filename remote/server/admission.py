"""What an upload must pass before its body is read (issue 21), called by the upload handler:
the blob store is not known to be failing (else 503 at once, with the breaker's Retry-After),
and the terminal is within its quotas (else 429, quotas.py). Both are answered without
reading a byte of the body or asking the store; the quota itself is taken in the
transaction that stores the bundle (Service.ingest)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NoReturn

import sqlalchemy as sa

from remote.server import auth, db, quotas, store
from remote.server.ingest import IngestError

if TYPE_CHECKING:
    from remote.server.service import Service


def uploader(srv: Service, token: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The token's active terminal and its quota counts (None when quotas are off), read by
    one statement: an upload's only database visit before its body."""
    with srv.engine.connect() as conn:
        rows = conn.execute(_UPLOADER, {"digest": auth.token_digest(token)}).all()
    if not rows:
        return None, None
    limits = srv.quota_limits
    counted = limits.bundles_per_hour or limits.bytes_per_day
    return {"id": rows[0].id, "token_sha256": rows[0].token_sha256}, quotas.usage_in(rows, limits) if counted else None


_t, _u = db.terminals.c, quotas.terminal_usage.c
_UPLOADER = (
    sa.select(_t.id, _t.token_sha256, _u.window, _u.started, _u.bundles, _u.bytes, _u.refused)
    .select_from(db.terminals.outerjoin(quotas.terminal_usage, _u.terminal_id == _t.id))
    .where(store.ACTIVE_TOKEN)
)  # fmt: skip  (built once: every upload runs it)


def admit_upload(srv: Service, token: str, declared: int | None, bad_length: Exception | None) -> dict[str, Any]:
    """An upload's turn before its body, in one thread hop: its terminal (else 401), its
    Content-Length (`bad_length`: the 400 or 413 it earned), then `admit`."""
    terminal, found = uploader(srv, token)
    if terminal is None:
        raise IngestError(401, "bad_token", "missing, unknown or revoked terminal token")
    if bad_length is not None:
        raise bad_length
    admit(srv, terminal["id"], declared or 0, found)
    return terminal


def admit(srv: Service, terminal_id: str, size: int, found: dict[str, Any] | None = None) -> None:
    """IngestError 503 while the store's breaker is open, 429 when the terminal is past a
    quota already (read only: the quota is taken where the bundle is stored, `refused`).
    `found`: its counts as `uploader` read them (else read here)."""
    wait = srv.blobs.breaker.wait()
    if wait > 0:
        raise IngestError(503, "blob_store_unavailable", "the blob store is failing; try again later", math.ceil(wait))
    try:
        if found is not None:
            quotas.check_usage(found, size, srv.quota_limits)
        else:
            quotas.check(srv.engine, terminal_id, size, srv.quota_limits)
    except quotas.OverQuota as exc:
        refused(srv, terminal_id, exc)


def refused(srv: Service, terminal_id: str, exc: quotas.OverQuota) -> NoReturn:
    """Count the refusal (terminal page, metrics) and answer 429."""
    quotas.count_refusal(srv.engine, terminal_id)
    srv.metrics.quota_refused(exc.quota)
    raise IngestError(429, "over_quota", exc.detail, exc.retry_after) from None
