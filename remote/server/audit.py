"""The audit log: who did what to which user or terminal, when, and from where (web, API,
command line). `record` is called by every administration action after it succeeded; rows
are removed by retention with the bundles received as long ago ([server.retention] days).

Other sources of entries (the incident actions of fleet/incident_actions.py, kept in their
own table) join the log through `add_source`: a function answering the same entries newest
first, so that `GET /audit` and `GET /api/v1/audit` read one log, paged by (at, id).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import db
from remote.server.db import audit_log

SOURCES = ("web", "api", "cli")
FILTERS = ("actor", "action", "object_kind", "object_id")


class Cursor:
    """Where a page of the log ends: the last entry's (at, id), as `at|id`."""

    @staticmethod
    def parse(text: str | None) -> tuple[str, str] | None:
        if not text:
            return None
        at, sep, entry_id = text.partition("|")
        if not sep or not at or len(text) > 200:
            raise ValueError("not a cursor of this log")
        return at, entry_id

    @staticmethod
    def of(entry: dict[str, Any]) -> str:
        return f"{entry['at']}|{entry['id']}"


# A source: (engine, filters, before (at, id) or None, limit) -> entries newest first, each
# {id, at, actor, source, action, object_kind, object_id, detail}, ids unique across sources.
Source = Callable[[Engine, dict[str, str], "tuple[str, str] | None", int], list[dict[str, Any]]]
_extra_sources: list[Source] = []


def add_source(source: Source) -> None:
    """Another table's entries in the log (e.g. incident actions); called once at import."""
    if source not in _extra_sources:
        _extra_sources.append(source)


def record(
    engine: Engine, actor: str, source: str, action: str, object_kind: str, object_id: str,
    detail: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """One entry, now. `detail` says what changed (a role, labels), never a secret."""
    if source not in SOURCES:
        raise ValueError(f"an audit entry's source is one of {', '.join(SOURCES)}")
    with db.writing(engine) as conn:
        conn.execute(
            audit_log.insert().values(
                at=db.now(), actor=actor[:128], source=source, action=action, object_kind=object_kind,
                object_id=object_id[:128], detail=json.dumps(detail or {}, sort_keys=True, ensure_ascii=False),
            )
        )  # fmt: skip


def _own_entries(engine: Engine, filters: dict[str, str], before: tuple[str, str] | None, limit: int) -> list[dict[str, Any]]:
    query = sa.select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit)
    for key in FILTERS:
        if filters.get(key):
            query = query.where(audit_log.c[key] == filters[key])
    if before is not None:
        query = query.where(audit_log.c.at <= before[0])  # ties on `at` are sorted out in entries()
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        {**dict(r), "id": f"a{r['id']:012d}", "detail": json.loads(r["detail"] or "{}")}
        for r in rows
    ]


def entries(
    engine: Engine, filters: dict[str, str], limit: int, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the log, newest first, from every source; and the cursor of the next page."""
    before = Cursor.parse(cursor)
    wanted = limit + 1
    found: list[dict[str, Any]] = []
    for source in (_own_entries, *_extra_sources):
        # Enough past the cursor's own second for the ties sorted out below.
        found.extend(source(engine, filters, before, wanted + 50))
    if before is not None:
        found = [e for e in found if (e["at"], e["id"]) < before]
    found.sort(key=lambda e: (e["at"], e["id"]), reverse=True)
    page = found[:limit]
    return page, (Cursor.of(page[-1]) if len(found) > limit else None)


def expire(engine: Engine, days: int, batch: int) -> int:
    """Entries older than `days` removed (0: kept forever), in batches; how many."""
    if not days:
        return 0
    cutoff = db.stamp(datetime.now(UTC) - timedelta(days=days))
    removed = 0
    while True:
        with db.writing(engine) as conn:
            ids = conn.execute(sa.select(audit_log.c.id).where(audit_log.c.at < cutoff).limit(batch)).scalars().all()
            if ids:
                conn.execute(audit_log.delete().where(audit_log.c.id.in_(ids)))
        removed += len(ids)
        if len(ids) < batch:
            return removed
