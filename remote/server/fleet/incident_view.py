"""What the incident page shows beside the incident's row: its timeline against the expected
count, the terminals and bundles it covers, top codes and causes, the webhooks sent.

An outage's bundles are its scope's host/network failures (outage_events) inside its span,
whether it still holds them or not (a dismissed one holds none); a regression's are the
bundles of its model and version in its categories since it started. Every part is one
query, bounded by the incident's span and a row limit.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import db
from remote.server.db import bundles
from remote.server.fleet import incident_actions, timing
from remote.server.fleet.incidents import hold as incidents_hold
from remote.server.fleet.schema import bundle_fleet, incidents, outage_events, webhook_deliveries
from remote.server_settings import FleetSettings

MAX_SLOTS = 72
ROWS = 100
EVENTS = ("incident.opened", "regression.opened", "incident.acknowledged", "incident.resolved", "incident.dismissed", "incident.closed")


def page(engine: Engine, incident_id: str, settings: FleetSettings) -> dict[str, Any] | None:
    """Everything the page shows, or None when there is no such incident."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).mappings().first()
        if row is None:
            return None
        span = _span(row)
        members = _members(row, span)
        slots, slot_minutes = _timeline(conn, row, span, settings)
        terminals = conn.execute(
            sa.select(members.c.terminal_id, sa.func.count().label("bundles"), sa.func.max(members.c.event_at).label("last_at"))
            .group_by(members.c.terminal_id).order_by(sa.desc("bundles"), members.c.terminal_id).limit(ROWS)
        ).mappings().all()  # fmt: skip
        causes = conn.execute(
            sa.select(bundles.c.code, bundles.c.top_cause, sa.func.count().label("count"))
            .select_from(members.join(bundles, bundles.c.id == members.c.bundle_id))
            .group_by(bundles.c.code, bundles.c.top_cause).order_by(sa.desc("count")).limit(10)
        ).mappings().all()  # fmt: skip
        held = conn.execute(
            sa.select(bundles).select_from(bundle_fleet.join(bundles, bundles.c.id == bundle_fleet.c.bundle_id))
            .where(bundle_fleet.c.hold_incident == incident_id).order_by(bundle_fleet.c.event_at.desc()).limit(ROWS)
        ).mappings().all()  # fmt: skip
        held_count = conn.execute(sa.select(sa.func.count()).where(bundle_fleet.c.hold_incident == incident_id)).scalar_one()
        d = webhook_deliveries.c
        hooks = conn.execute(
            sa.select(d.event, d.created_at, d.delivered_at, d.attempts, d.last_error)
            .where(d.dedupe.in_([f"{e}:{incident_id}" for e in EVENTS])).order_by(d.created_at)
        ).mappings().all()  # fmt: skip
    found = incident_actions.detail(engine, incident_id)
    return {
        "incident": found, "slots": slots, "slot_minutes": slot_minutes,
        "terminals": [dict(t) for t in terminals], "causes": [dict(c) for c in causes],
        "held": [dict(h, hold=incidents_hold(incident_id, found["summary"])) for h in held], "held_count": held_count, "webhooks": [dict(h) for h in hooks],
    }  # fmt: skip


def _span(row: Any) -> tuple[str, str]:
    """The incident's event-time span: start to end (or its last hit, or now, while open)."""
    end = row["ended_at"] or max(row["last_hit_at"] or row["started_at"], min(db.now(), timing.shift(row["started_at"], days=30)))
    return row["started_at"], end


def _members(row: Any, span: tuple[str, str]) -> sa.Subquery:
    """(bundle_id, terminal_id, event_at) of the bundles the incident covers."""
    if row["kind"] == "outage":
        e = outage_events.c
        return sa.select(e.bundle_id, e.terminal_id, e.event_at).where(e.scope_key == row["scope_key"], e.event_at >= span[0], e.event_at <= span[1]).subquery()
    b = bundle_fleet.c
    scope = json.loads(row["scope"])
    clauses = [b[k] == v for k, v in scope.items() if k in ("model", "firmware", "app_version")]
    clauses += [b.top_category.in_(json.loads(row["categories"])), b.event_at >= span[0], b.event_at <= span[1]]
    return sa.select(b.bundle_id, b.terminal_id, b.event_at).where(*clauses).subquery()


def _timeline(conn: sa.Connection, row: Any, span: tuple[str, str], settings: FleetSettings) -> tuple[list[tuple[str, int, float, float]], float]:
    """(slot start, failing terminals, expected low, expected high) per slot, from a little
    before the start to the end; the slot length in minutes. An outage's slot is its test
    window (longer when the span needs more than MAX_SLOTS of them), its expected count the
    one the detector tested against; a regression's slot is a day."""
    if row["kind"] == "outage":
        minutes = float(settings.outage_window_minutes)
        length = timing.hours_between(span[0], span[1]) * 60 + 8 * minutes
        minutes = max(minutes, length / MAX_SLOTS)
        first = db.parse_time(timing.shift(span[0], minutes=-4 * minutes))
        expected = row["expected"] * minutes / settings.outage_window_minutes
        e = outage_events.c
        events = conn.execute(
            sa.select(e.terminal_id, e.event_at).where(e.scope_key == row["scope_key"], e.event_at >= db.stamp(first), e.event_at <= timing.shift(span[1], minutes=4 * minutes))
        ).all()  # fmt: skip
    else:
        minutes = 1440.0
        first = db.parse_time(span[0][:10] + "T00:00:00.000000Z")
        length = timing.hours_between(db.stamp(first), span[1]) * 60 + minutes
        days = max(length / minutes, 1.0)
        expected = row["expected"] / days
        m = _members(row, (db.stamp(first), span[1]))
        events = conn.execute(sa.select(m.c.terminal_id, m.c.event_at)).all()
    until_now = (db.parse_time(db.now()) - first).total_seconds() // (minutes * 60) + 1  # no slot in the future
    count = max(1, min(MAX_SLOTS + 8, int(length // minutes) + 1, int(until_now)))
    failing: list[set[str]] = [set() for _ in range(count)]
    for terminal_id, event_at in events:
        index = int((db.parse_time(event_at) - first).total_seconds() // (minutes * 60))
        if 0 <= index < count:
            failing[index].add(terminal_id)
    starts = [db.stamp(first + timedelta(minutes=minutes * i)) for i in range(count)]
    return [(s, len(f), expected, expected) for s, f in zip(starts, failing, strict=True)], minutes
