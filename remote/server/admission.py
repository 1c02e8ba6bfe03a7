"""What an upload must pass before its body is read (issue 21), called by the upload handler:
the blob store is not known to be failing (else 503 at once, with the breaker's Retry-After),
and the terminal is within its quotas (else 429, quotas.py). Both are answered without
reading a byte of the body or asking the store."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from remote.server import quotas
from remote.server.ingest import IngestError

if TYPE_CHECKING:
    from remote.server.service import Service


def admit(srv: Service, terminal_id: str, size: int) -> quotas.Reservation:
    """The terminal's quota reservation for an upload of at most `size` bytes; IngestError
    503 while the store's breaker is open, 429 past a quota (counted in the metrics)."""
    wait = srv.blobs.breaker.wait()
    if wait > 0:
        raise IngestError(503, "blob_store_unavailable", "the blob store is failing; try again later", math.ceil(wait))
    try:
        return quotas.reserve(srv.engine, terminal_id, size, srv.quota_limits)
    except quotas.OverQuota as exc:
        srv.metrics.quota_refused(exc.quota)
        raise IngestError(429, "over_quota", exc.detail, exc.retry_after) from None


def settle(srv: Service, reservation: quotas.Reservation, stored_bytes: int | None) -> None:
    quotas.settle(srv.engine, reservation, stored_bytes)
