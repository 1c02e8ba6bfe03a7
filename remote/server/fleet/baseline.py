"""What the outage detector compares a window with, kept so that no arrival counts a
scope's history: failing terminal-hours per scope and hour (`scope_hours`, with how many an
incident holds), each scope member's last sighting (`scope_members.seen_at`) and the
members per scope by the hour of that sighting (`scope_seen_hours`).

Evidence is bounded per terminal: a terminal's host/network failures count in a baseline
at most once per UTC hour of their event time (`failure_hours` remembers which bundle
counted), so one terminal sending or back-dating 2,000 failures adds one terminal-hour, not
2,000, and cannot raise its scopes' baselines above what one failing terminal does.

At a million bundles, counting a large scope's seven days of failures and joining its
tens of thousands of members at each arrival took seconds; these make it a handful of rows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa

from remote.server.fleet import sql, timing
from remote.server.fleet.schema import (
    bundle_fleet,
    failure_hours,
    fleet_terminals,
    outage_events,
    scope_hours,
    scope_members,
    scope_seen_hours,
)
from remote.server_settings import FleetSettings

SEEN_STEPS = 10  # seen_at moves when a sighting is a tenth of missing_after_hours newer


def hour(stamp: str) -> str:
    return stamp[:13]


def _hour_start(key: str) -> str:
    return key + ":00:00.000000Z"


def count_failure(conn: sa.Connection, terminal_id: str, bundle_id: str, scope_keys: list[str], event_at: str) -> bool:
    """Count a host/network failure into its scopes' baselines, unless the terminal has one
    counted in that hour already. Whether it was counted."""
    row = {"terminal_id": terminal_id, "hour": hour(event_at), "bundle_id": bundle_id}
    if not sql.insert_new(conn, failure_hours, ["terminal_id", "hour"], [row]):
        return False
    add_events(conn, scope_keys, event_at)
    return True


def add_events(conn: sa.Connection, scope_keys: list[str], event_at: str) -> None:
    rows = [{"scope_key": k, "hour": hour(event_at), "events": 1, "held": 0} for k in sorted(scope_keys)]
    sql.add_counts(conn, scope_hours, ["scope_key", "hour"], rows, "events")


def add_held(conn: sa.Connection, bundle_ids: list[str], sign: int = 1) -> None:
    """These bundles were just held (sign -1: released): the terminal-hours they count
    leave every scope's baseline (or come back to it)."""
    if not bundle_ids:
        return
    e = outage_events.c
    held: Counter[tuple[str, str]] = Counter()
    counted = outage_events.join(failure_hours, failure_hours.c.bundle_id == e.bundle_id)
    for scope_key, event_at in conn.execute(sa.select(e.scope_key, e.event_at).select_from(counted).where(e.bundle_id.in_(bundle_ids))):
        held[(scope_key, hour(event_at))] += sign
    rows = [{"scope_key": k, "hour": h, "events": 0, "held": n} for (k, h), n in sorted(held.items())]
    sql.add_counts(conn, scope_hours, ["scope_key", "hour"], rows, "held")


def whole_hours(begin: str, end: str) -> tuple[str, str, float]:
    """The whole UTC hours inside [begin, end]: (first hour's key, key after the last, hours)."""
    first = timing.shift(_hour_start(hour(begin)), hours=1) if begin > _hour_start(hour(begin)) else _hour_start(hour(begin))
    after = _hour_start(hour(end))
    return hour(first), hour(after), max(timing.hours_between(first, after), 0.0)


def unheld_events(conn: sa.Connection, scope_key: str, first_hour: str, after_hour: str) -> int:
    """Failing terminal-hours of the scope in the hours [first_hour, after_hour) whose
    counted bundle no incident holds."""
    h = scope_hours.c
    total = conn.execute(
        sa.select(sa.func.sum(h.events - h.held)).where(h.scope_key == scope_key, h.hour >= first_hour, h.hour < after_hour)
    ).scalar()
    return int(total or 0)


def unheld_by_hour(conn: sa.Connection, scope_key: str, first_hour: str, after_hour: str) -> dict[str, int]:
    """unheld_events hour by hour (hours without a failure left out)."""
    h = scope_hours.c
    rows = conn.execute(sa.select(h.hour, h.events - h.held).where(h.scope_key == scope_key, h.hour >= first_hour, h.hour < after_hour))
    return {hour_key: int(n) for hour_key, n in rows if n}


def hour_keys(first_hour: str, after_hour: str) -> list[str]:
    """Every hour key in [first_hour, after_hour)."""
    keys, at = [], _hour_start(first_hour)
    while hour(at) < after_hour:
        keys.append(hour(at))
        at = timing.shift(at, hours=1)
    return keys


_MOVING = (
    sa.select(scope_members.c.scope_key, scope_members.c.seen_at)
    .where(scope_members.c.terminal_id == sa.bindparam("tid"), sa.or_(scope_members.c.seen_at.is_(None), scope_members.c.seen_at < sa.bindparam("stale")))
    .with_for_update()
)  # fmt: skip  (built once: every arrival asks)


def see(conn: sa.Connection, terminal_id: str, event_at: str, settings: FleetSettings) -> None:
    """Move the terminal's seen_at in its scopes, in steps (a write per step, not per heartbeat)."""
    stale = timing.shift(event_at, hours=-settings.missing_after_hours / SEEN_STEPS)
    m = scope_members.c
    # Locked first: of two arrivals of one terminal, the second finds the rows moved already.
    rows = conn.execute(_MOVING, {"tid": terminal_id, "stale": stale}).all()
    if rows:
        conn.execute(scope_members.update().where(m.terminal_id == terminal_id, m.scope_key.in_([r.scope_key for r in rows])).values(seen_at=event_at))
        _recount(conn, [(r.scope_key, r.seen_at) for r in rows], event_at)


def leave(conn: sa.Connection, terminal_id: str) -> None:
    """The terminal is about to leave its scopes (its labels change): uncount it."""
    m = scope_members.c
    rows = conn.execute(sa.select(m.scope_key, m.seen_at).where(m.terminal_id == terminal_id).with_for_update()).all()
    _recount(conn, [(r.scope_key, r.seen_at) for r in rows], None)


def _recount(conn: sa.Connection, moved: list[tuple[str, str | None]], seen_at: str | None) -> None:
    change: Counter[tuple[str, str]] = Counter()
    for scope_key, before in moved:
        if before:
            change[(scope_key, hour(before))] -= 1
        if seen_at:
            change[(scope_key, hour(seen_at))] += 1
    rows = [{"scope_key": k, "hour": h, "members": n} for (k, h), n in sorted(change.items()) if n]
    sql.move_counts(conn, scope_seen_hours, ["scope_key", "hour"], rows, "members")


def active(conn: sa.Connection, scope_key: str, t: str, settings: FleetSettings) -> int:
    """The scope's terminals seen within missing_after_hours before t (to within a step, and
    the hour the window starts in counted whole)."""
    since = timing.shift(t, hours=-settings.missing_after_hours)
    s = scope_seen_hours.c
    total = conn.execute(sa.select(sa.func.sum(s.members)).where(s.scope_key == scope_key, s.hour >= hour(since))).scalar()
    return int(total or 0)


def rebuild(conn: sa.Connection) -> None:
    """Count both again (a database loaded in bulk)."""
    rebuild_hours(conn)
    rebuild_seen(conn)


@sa.event.listens_for(scope_hours, "after_create")
@sa.event.listens_for(failure_hours, "after_create")
def _fill_new_table(_table: sa.Table, conn: sa.Connection, **_kw: Any) -> None:
    """A database made before either table (an older one counted every bundle) gets both
    counted from what it holds, once every table they are read from exists."""
    inspector = sa.inspect(conn)
    if all(inspector.has_table(t.name) for t in (outage_events, bundle_fleet, failure_hours, scope_hours)):
        rebuild_hours(conn)


def rebuild_hours(conn: sa.Connection) -> None:
    """failure_hours (each terminal-hour's first bundle by id) and scope_hours from them."""
    e = outage_events.c
    key = sa.func.substr(e.event_at, 1, 13)
    conn.execute(failure_hours.delete())
    conn.execute(failure_hours.insert().from_select(
        ["terminal_id", "hour", "bundle_id"], sa.select(e.terminal_id, key, sa.func.min(e.bundle_id)).group_by(e.terminal_id, key)
    ))  # fmt: skip
    held = sa.func.sum(sa.case((bundle_fleet.c.hold_incident.is_not(None), 1), else_=0))
    conn.execute(scope_hours.delete())
    conn.execute(scope_hours.insert().from_select(
        ["scope_key", "hour", "events", "held"],
        sa.select(e.scope_key, key, sa.func.count(), held)
        .select_from(
            outage_events.join(failure_hours, failure_hours.c.bundle_id == e.bundle_id)
            .join(bundle_fleet, bundle_fleet.c.bundle_id == e.bundle_id)
        )
        .group_by(e.scope_key, key),
    ))  # fmt: skip


def rebuild_seen(conn: sa.Connection) -> None:
    seen = sa.select(fleet_terminals.c.last_seen_at).where(fleet_terminals.c.id == scope_members.c.terminal_id).scalar_subquery()
    conn.execute(scope_members.update().values(seen_at=seen))
    rebuild_seen_hours(conn)


def rebuild_seen_hours(conn: sa.Connection) -> None:
    m = scope_members.c
    key = sa.func.substr(m.seen_at, 1, 13)
    conn.execute(scope_seen_hours.delete())
    conn.execute(scope_seen_hours.insert().from_select(
        ["scope_key", "hour", "members"], sa.select(m.scope_key, key, sa.func.count()).where(m.seen_at.is_not(None)).group_by(m.scope_key, key)
    ))  # fmt: skip


@sa.event.listens_for(scope_seen_hours, "after_create")
def _fill_new_counts(_table: sa.Table, conn: sa.Connection, **_kw: Any) -> None:
    if "seen_at" in {c["name"] for c in sa.inspect(conn).get_columns("scope_members")}:
        rebuild_seen_hours(conn)  # else the seen_at column's own fill counts them


scope_members.c.seen_at.info["fill"] = rebuild_seen
