"""Bundles counted per UTC day of `created_at`, by code, cause, category, model, firmware,
verdict and terminal. The overview page and GET /api/v1/stats read these counts instead of
counting bundles (at a million bundles, counting 14 days of them took seconds).

The counts change in the transaction that stores a bundle or that retention removes it
in, so they always equal the bundles stored. A database made before this table existed
gets it filled from its bundles when the table is created.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from remote.server.db import bundles, metadata
from remote.server.fleet import sql

DIMS = {  # dimension -> the bundle column it counts
    "code": "code",
    "cause": "top_cause",
    "category": "top_category",
    "model": "model",
    "firmware": "firmware",
    "verdict": "verdict",
    "terminal": "terminal_id",
}
NONE = ""  # the key of bundles whose column is NULL

bundle_days = sa.Table(
    "bundle_days",
    metadata,
    sa.Column("dim", sa.String(16), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Index("ix_bundle_days_key", "dim", "key", "day"),
    sa.Index("ix_bundle_days_size", "dim", "count"),
)


def count(conn: sa.Connection, rows: list[dict[str, Any]], sign: int = 1) -> None:
    """Add bundles (their index rows) to the counts, or take them out (sign -1)."""
    totals: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        day = row["created_at"][:10]
        for dim, column in DIMS.items():
            totals[(dim, day, row[column] or NONE)] += sign
    changes = [{"dim": d, "day": day, "key": k, "count": n} for (d, day, k), n in sorted(totals.items()) if n]
    sql.move_counts(conn, bundle_days, ["dim", "day", "key"], changes, "count")


def rebuild(conn: sa.Connection) -> None:
    """Count every stored bundle again (a database made before this table, or loaded in bulk)."""
    conn.execute(bundle_days.delete())
    day = sa.func.substr(bundles.c.created_at, 1, 10)
    for dim, column in DIMS.items():
        key = sa.func.coalesce(bundles.c[column], NONE)
        conn.execute(
            bundle_days.insert().from_select(
                ["dim", "day", "key", "count"],
                sa.select(sa.literal(dim), day, key, sa.func.count()).group_by(day, key),
            )
        )


@sa.event.listens_for(bundle_days, "after_create")
def _fill_new_table(_table: sa.Table, conn: sa.Connection, **_kw: Any) -> None:
    rebuild(conn)


def _span(first: date, last: date) -> Any:
    return sa.and_(bundle_days.c.day >= first.isoformat(), bundle_days.c.day <= last.isoformat())


def top(conn: sa.Connection, dim: str, first: date, last: date, limit: int) -> list[dict[str, Any]]:
    """The `limit` keys with the most bundles over the days, largest first (then by key).

    Exact without summing every key of a wide dimension (terminals): the keys of the
    biggest single days give a limit-th best sum T; a key below ceil(T/days) on every day
    sums to less than T, so only keys with a day at least that big are summed."""
    d = bundle_days.c
    in_span = sa.and_(d.dim == dim, _span(first, last))
    days = (last - first).days + 1
    # limit·days biggest rows hold `limit` keys whenever that many exist (a key has one row a day)
    biggest = sa.select(d.key).where(in_span).order_by(d.count.desc()).limit(limit * days)
    found = _sums(conn, in_span, d.key.in_(biggest.scalar_subquery()), limit)
    if len(found) == limit:
        floor = math.ceil(found[-1][1] / days)
        wide = sa.select(d.key).where(in_span, d.count >= floor)
        found = _sums(conn, in_span, d.key.in_(wide.scalar_subquery()) if floor > 1 else None, limit)
    return [{"key": None if k == NONE else k, "count": n} for k, n in found]


def _sums(conn: sa.Connection, in_span: Any, keys: Any, limit: int) -> list[tuple[str, int]]:
    d = bundle_days.c
    total = sa.func.sum(d.count).label("n")
    query = sa.select(d.key, total).where(in_span).group_by(d.key).order_by(total.desc(), d.key).limit(limit)
    if keys is not None:
        query = query.where(keys)
    return [(r.key, int(r.n)) for r in conn.execute(query)]


def per_day(conn: sa.Connection, first: date, last: date) -> list[dict[str, Any]]:
    d = bundle_days.c
    rows = conn.execute(
        sa.select(d.day, d.key, d.count).where(d.dim == "category", _span(first, last)).order_by(d.day, d.key)
    )
    return [{"day": r.day, "category": None if r.key == NONE else r.key, "count": r.count} for r in rows]


def days_ending(last: date, days: int) -> tuple[date, date]:
    return last - timedelta(days=days - 1), last
