"""Per-terminal upload quotas (issue 21): bundles per UTC hour and bytes per UTC day.

One terminal token could write 23 MiB/s (about 1.9 TiB a day) before. Before the body is
read, the counts are read (`check`): a terminal with no bundle of its hour left, or whose
Content-Length would take it past its day's bytes, is refused with 429 `over_quota` and
Retry-After (seconds to the end of that window), and the agent keeps the bundle for later.
The bundle and its real size are counted in the transaction that stores it (`take`, issue
22: one transaction per upload), so a repeat or a failed upload costs nothing.

The counts live in the table `terminal_usage`, one row per terminal and window, changed by
conditional updates: every server behind a balancer sees the same counts and two uploads
racing for the last slot never both get it (the loser's transaction stores nothing, 429).
Limits of 0 are off.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from remote.server import db
from remote.server.fleet import sql

terminal_usage = sa.Table(
    "terminal_usage",
    db.metadata,
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Column("window", sa.String(8), primary_key=True),  # hour | day
    sa.Column("started", sa.String(13), nullable=False),  # 2026-12-07T02 (hour) or 2026-12-07 (day), UTC
    sa.Column("bundles", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("refused", sa.Integer, nullable=False),  # uploads refused in this window
)


class OverQuota(Exception):
    def __init__(self, quota: str, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.quota, self.detail, self.retry_after = quota, detail, retry_after


@dataclass(frozen=True)
class Limits:
    bundles_per_hour: int
    bytes_per_day: int

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(settings.quota_bundles_per_terminal_hour, int(settings.quota_mib_per_terminal_day * (1 << 20)))


def windows(now: datetime) -> tuple[str, str, int, int]:
    """The hour and day `now` is in, and the seconds left in each."""
    hour_start = now.replace(minute=0, second=0, microsecond=0)
    day_start = hour_start.replace(hour=0)
    left = lambda start, span: max(1, math.ceil((start + span - now).total_seconds()))  # noqa: E731
    return hour_start.strftime("%Y-%m-%dT%H"), day_start.strftime("%Y-%m-%d"), left(hour_start, timedelta(hours=1)), left(day_start, timedelta(days=1))


def _refusal(limits: Limits, quota: str, hour_left: int, day_left: int) -> OverQuota:
    if quota == "bundles_per_hour":
        return OverQuota(quota, f"this terminal has sent {limits.bundles_per_hour} bundles this hour", hour_left)
    return OverQuota(quota, f"this bundle would take this terminal past {limits.bytes_per_day >> 20} MiB today", day_left)


def check(engine: Engine, terminal_id: str, size: int, limits: Limits, now: datetime | None = None) -> None:
    """Before the body is read, by reading alone: OverQuota when the terminal has no bundle of
    this hour left, or `size` (Content-Length) would take it past today's bytes."""
    if limits.bundles_per_hour or limits.bytes_per_day:
        check_usage(usage(engine, terminal_id, limits, now), size, limits, now)


def check_usage(found: dict[str, Any], size: int, limits: Limits, now: datetime | None = None) -> None:
    """check() on counts already read (`usage_of`, in the connection that found the terminal)."""
    _, _, hour_left, day_left = windows(now or datetime.now(UTC))
    if limits.bundles_per_hour and found["bundles_this_hour"] >= limits.bundles_per_hour:
        raise _refusal(limits, "bundles_per_hour", hour_left, day_left)
    if limits.bytes_per_day and found["bytes_today"] + size > limits.bytes_per_day:
        raise _refusal(limits, "bytes_per_day", hour_left, day_left)


def take(conn: sa.Connection, uploads: Sequence[tuple[str, int]], limits: Limits, now: datetime | None = None) -> None:
    """In the transaction that stores the bundles (terminal id, size): one bundle of this hour
    and its size in bytes of today for each, or OverQuota for the first terminal past a
    quota (the caller's transaction then stores nothing). One conditional upsert per window
    for all terminals decides between uploads racing for the last slot, on any server (a
    window begun anew starts from these bundles)."""
    now = now or datetime.now(UTC)
    hour, day, hour_left, day_left = windows(now)
    per_terminal: dict[str, list[int]] = {}
    for terminal_id, size in uploads:
        counts = per_terminal.setdefault(terminal_id, [0, 0])
        counts[0] += 1
        counts[1] += size
        if limits.bundles_per_hour and counts[0] > limits.bundles_per_hour:  # more than a fresh window holds
            raise _refusal(limits, "bundles_per_hour", hour_left, day_left)
        if limits.bytes_per_day and counts[1] > limits.bytes_per_day:
            raise _refusal(limits, "bytes_per_day", hour_left, day_left)
    for window, started, limit, quota in (
        ("hour", hour, limits.bundles_per_hour, "bundles_per_hour"),
        ("day", day, limits.bytes_per_day, "bytes_per_day"),
    ):
        rows = [
            {"terminal_id": tid, "window": window, "started": started, "bundles": n if window == "hour" else 0,
             "bytes": size if window == "day" else 0, "refused": 0} | ({"room_limit": limit} if limit else {})
            for tid, (n, size) in sorted(per_terminal.items())  # one order in every transaction: no deadlock
        ]  # fmt: skip
        added = {row.terminal_id for row in conn.execute(_counting(conn.dialect.name, window, bool(limit)), rows)}
        if len(added) < len(rows):
            raise _refusal(limits, quota, hour_left, day_left)


@functools.lru_cache(maxsize=8)
def _counting(dialect: str, window: str, limited: bool) -> Any:
    """take()'s conditional upsert, made once (building it cost more than running it)."""
    u = terminal_usage.c
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(terminal_usage)
    same = u.started == stmt.excluded.started
    if not limited:
        room = sa.true()
    elif window == "hour":
        room = u.bundles + stmt.excluded.bundles <= sa.bindparam("room_limit")
    else:
        room = u.bytes + stmt.excluded.bytes <= sa.bindparam("room_limit")
    return stmt.on_conflict_do_update(
        index_elements=["terminal_id", "window"],
        set_={
            "started": stmt.excluded.started,
            "bundles": sa.case((same, u.bundles + stmt.excluded.bundles), else_=stmt.excluded.bundles),
            "bytes": sa.case((same, u.bytes + stmt.excluded.bytes), else_=stmt.excluded.bytes),
            "refused": sa.case((same, u.refused), else_=0),
        },
        where=sa.or_(u.started != stmt.excluded.started, room),
    ).returning(u.terminal_id)


def count_refusal(engine: Engine, terminal_id: str, now: datetime | None = None) -> None:
    """A refused upload, counted in both windows (the terminal page shows them)."""
    hour, day, _, _ = windows(now or datetime.now(UTC))
    u = terminal_usage.c
    with db.writing(engine) as conn:
        for window, started in (("hour", hour), ("day", day)):  # rows in one order in every transaction: no deadlock between uploads
            _open_window(conn, terminal_id, window, started)
            conn.execute(terminal_usage.update().where(u.terminal_id == terminal_id, u.window == window).values(refused=u.refused + 1))


def _open_window(conn: sa.Connection, terminal_id: str, window: str, started: str) -> None:
    """The terminal's row for `window`, starting over when the stored one is an older window."""
    row = {"terminal_id": terminal_id, "window": window, "started": started, "bundles": 0, "bytes": 0, "refused": 0}
    stmt = sql.insert(conn, terminal_usage)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["terminal_id", "window"],
            set_={"started": started, "bundles": 0, "bytes": 0, "refused": 0},
            where=terminal_usage.c.started != started,
        ),
        row,
    )


def usage(engine: Engine, terminal_id: str, limits: Limits, now: datetime | None = None) -> dict[str, Any]:
    """This hour's and today's counts for the terminal page (0 for a window not begun)."""
    with engine.connect() as conn:
        return usage_of(conn, terminal_id, limits, now)


def usage_of(conn: sa.Connection, terminal_id: str, limits: Limits, now: datetime | None = None) -> dict[str, Any]:
    u = terminal_usage.c
    return usage_in(conn.execute(sa.select(terminal_usage).where(u.terminal_id == terminal_id)).all(), limits, now)


def usage_in(found: Sequence[Any], limits: Limits, now: datetime | None = None) -> dict[str, Any]:
    """usage() of the terminal's `terminal_usage` rows as read (window, started, bundles,
    bytes, refused; a row of None for none)."""
    hour, day, _, _ = windows(now or datetime.now(UTC))
    rows = {r.window: r for r in found if r.window is not None}
    current = {w: rows[w] for w, started in (("hour", hour), ("day", day)) if w in rows and rows[w].started == started}
    hour_row, day_row = current.get("hour"), current.get("day")
    return {
        "bundles_this_hour": hour_row.bundles if hour_row else 0,
        "max_bundles_per_hour": limits.bundles_per_hour,
        "bytes_today": day_row.bytes if day_row else 0,
        "max_bytes_per_day": limits.bytes_per_day,
        "refused_this_hour": hour_row.refused if hour_row else 0,
        "refused_today": day_row.refused if day_row else 0,
    }
