"""Incidents: stored, listed, told to terminals; fleet dispatch (hold) on the bundles an
outage covers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server.db import bundles
from remote.server.fleet import baseline, sql
from remote.server.fleet.schema import bundle_fleet, dismissed_terminals, incidents, outage_events, scope_members

HEADER_DOC = {
    "description": "JSON list of the open incidents covering the terminal (ids, kind, scope, summary), ASCII-escaped",
    "schema": {"type": "string"},
}
HOLD_REASON = {
    "en": "Fleet incident {id}: {summary} Hold any dispatch: the fault is outside this terminal.",
    "zh": "机群事件 {id}：{summary} 暂缓派单：故障不在本终端。",
}


def view(row: Any) -> dict[str, Any]:
    summary = json.loads(row["summary"])
    return {
        "id": row["id"], "kind": row["kind"], "status": row["status"], "scope": json.loads(row["scope"]),
        "categories": json.loads(row["categories"]), "codes": json.loads(row["codes"]),
        "started_at": row["started_at"], "detected_at": row["detected_at"], "ended_at": row["ended_at"],
        "terminals_affected": row["terminals_affected"], "terminals_in_scope": row["terminals_in_scope"],
        "bundles": row["bundles"], "expected": row["expected"], "p_value": row["p_value"], "summary": summary,
        "acknowledged_at": row["acknowledged_at"], "acknowledged_by": row["acknowledged_by"],
    }  # fmt: skip


def open_incident(conn: sa.Connection, kind: str, scope_key: str, values: dict[str, Any]) -> tuple[str, bool]:
    """(id, True) for a new open incident, or the id of the one already open on the scope."""
    open_key = f"{kind}:{scope_key}"
    existing = conn.execute(sa.select(incidents.c.id).where(incidents.c.open_key == open_key)).scalar()
    if existing:
        return existing, False
    incident_id = str(uuid.uuid4())
    row = dict(values, id=incident_id, kind=kind, status="open", scope_key=scope_key, open_key=open_key)
    if sql.insert_new(conn, incidents, ["open_key"], [row]):
        return incident_id, True
    # another worker opened it first
    return conn.execute(sa.select(incidents.c.id).where(incidents.c.open_key == open_key)).scalar_one(), False


def close(conn: sa.Connection, incident_id: str, ended_at: str) -> bool:
    return bool(
        conn.execute(
            incidents.update().where(incidents.c.id == incident_id, incidents.c.status == "open")
            .values(status="closed", open_key=None, ended_at=ended_at)
        ).rowcount
    )  # fmt: skip


def mark_holds(conn: sa.Connection, incident_id: str, scope_key: str, start: str, end: str, room: int | None = None) -> None:
    """Hold the scope's host/network failures in [start, end] not held yet, the oldest
    first and at most `room` of them (None: all)."""
    if room is not None and room <= 0:
        return
    e = outage_events.c
    free = (
        sa.select(e.bundle_id)
        .select_from(outage_events.join(bundle_fleet, bundle_fleet.c.bundle_id == e.bundle_id))
        .where(e.scope_key == scope_key, e.event_at >= start, e.event_at <= end, bundle_fleet.c.hold_incident.is_(None))
        .order_by(e.event_at, e.bundle_id)
    )  # fmt: skip
    if room is not None:
        free = free.limit(room)
    ids = list(conn.execute(free).scalars())
    if not ids:
        return
    held = conn.execute(
        bundle_fleet.update()
        .where(bundle_fleet.c.bundle_id.in_(ids), bundle_fleet.c.hold_incident.is_(None))
        .values(hold_incident=incident_id)
        .returning(bundle_fleet.c.bundle_id)
    ).scalars().all()
    baseline.add_held(conn, list(held))


def release_outside(conn: sa.Connection, incident_id: str, scope_key: str, start: str, end: str) -> None:
    """Release the incident's holds that its scope and span no longer cover (re-scoped)."""
    e = outage_events.c
    inside = sa.select(e.bundle_id).where(e.scope_key == scope_key, e.event_at >= start, e.event_at <= end)
    _release(conn, sa.and_(bundle_fleet.c.hold_incident == incident_id, bundle_fleet.c.bundle_id.not_in(inside)))


def _release(conn: sa.Connection, which: Any) -> None:
    freed = conn.execute(bundle_fleet.update().where(which).values(hold_incident=None).returning(bundle_fleet.c.bundle_id)).scalars().all()
    baseline.add_held(conn, list(freed), -1)


def dismiss(conn: sa.Connection, incident_id: str) -> bool:
    """A person says this outage is not one: it closes as `dismissed`, releases its holds,
    and its failing terminals open no new outage for the baseline days (who and when: the
    caller's audit record)."""
    done = conn.execute(
        incidents.update().where(incidents.c.id == incident_id, incidents.c.kind == "outage", incidents.c.status != "dismissed")
        .values(status="dismissed", open_key=None, ended_at=sa.func.coalesce(incidents.c.ended_at, incidents.c.last_hit_at))
    ).rowcount  # fmt: skip
    settle_dismissed(conn)
    return bool(done)


def settle_dismissed(conn: sa.Connection) -> list[str]:
    """Dismissed outages that still hold bundles (their status set by a page or by hand):
    remember their failing terminals, release the holds. The ids settled."""
    b = bundle_fleet.c
    rows = conn.execute(
        sa.select(incidents.c.id, incidents.c.scope_key, incidents.c.started_at, incidents.c.last_hit_at)
        .where(incidents.c.status == "dismissed", incidents.c.kind == "outage", sa.exists().where(b.hold_incident == incidents.c.id))
    ).all()  # fmt: skip
    for r in rows:
        e = outage_events.c
        failing = conn.execute(
            sa.select(e.terminal_id).distinct().where(e.scope_key == r.scope_key, e.event_at >= r.started_at, e.event_at <= r.last_hit_at)
        ).scalars().all()  # fmt: skip
        held = conn.execute(sa.select(b.terminal_id).distinct().where(b.hold_incident == r.id)).scalars().all()
        sql.insert_new(conn, dismissed_terminals, ["incident_id", "terminal_id"], [{"incident_id": r.id, "terminal_id": t} for t in sorted({*failing, *held})])
        _release(conn, b.hold_incident == r.id)
        refresh_counts(conn, r.id)
    return [r.id for r in rows]


def refresh_counts(conn: sa.Connection, incident_id: str, failing: int = 0) -> dict[str, Any]:
    """terminals_affected (those it holds, or `failing` if more), bundles, categories and
    codes from the bundles it holds."""
    held = bundle_fleet.c.hold_incident == incident_id
    terminals, count = conn.execute(
        sa.select(sa.func.count(sa.distinct(bundle_fleet.c.terminal_id)), sa.func.count()).where(held)
    ).one()
    terminals = max(terminals, failing)
    rows = conn.execute(
        sa.select(bundles.c.code, bundles.c.top_category, sa.func.count().label("n"))
        .select_from(bundle_fleet.join(bundles, bundles.c.id == bundle_fleet.c.bundle_id))
        .where(held).group_by(bundles.c.code, bundles.c.top_category).order_by(sa.desc("n"))
    ).all()  # fmt: skip
    codes = list(dict.fromkeys(r.code for r in rows if r.code))[:10]
    categories = sorted({r.top_category for r in rows if r.top_category})
    values = {"terminals_affected": terminals, "bundles": count, "codes": json.dumps(codes), "categories": json.dumps(categories)}
    conn.execute(incidents.update().where(incidents.c.id == incident_id).values(**values))
    return values


def list_incidents(engine: Engine, status: str = "all", since: str | None = None, until: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Newest first; since/until select incidents whose span overlaps [since, until)."""
    query = sa.select(incidents)
    if status in ("open", "closed", "dismissed"):
        query = query.where(incidents.c.status == status)
    if since:
        query = query.where(sa.or_(incidents.c.ended_at.is_(None), incidents.c.ended_at >= since))
    if until:
        query = query.where(incidents.c.started_at < until)
    query = query.order_by(incidents.c.started_at.desc(), incidents.c.id).limit(limit)
    with engine.connect() as conn:
        return [view(r) for r in conn.execute(query).mappings()]


def get_incident(engine: Engine, incident_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).mappings().first()
    return view(row) if row else None


def covering(engine: Engine | sa.Connection, terminal_id: str, model: str | None, firmware: str | None, app_version: str | None) -> list[dict[str, Any]]:
    """Open incidents that cover a terminal: outages on one of its scopes, regressions on its
    versions (read in `engine`'s own connection, or in the one given)."""
    keys = sa.select(scope_members.c.scope_key).where(scope_members.c.terminal_id == terminal_id)
    versions = [f"firmware={firmware}&model={model}", f"app_version={app_version}&model={model}"]
    query = sa.select(incidents).where(
        incidents.c.status == "open",
        sa.or_(
            sa.and_(incidents.c.kind == "outage", incidents.c.scope_key.in_(keys)),
            sa.and_(incidents.c.kind == "regression", incidents.c.scope_key.in_(versions)),
        ),
    )
    if isinstance(engine, sa.Connection):
        return [view(r) for r in engine.execute(query).mappings()]
    with engine.connect() as conn:
        return [view(r) for r in conn.execute(query).mappings()]


def notice(incident: dict[str, Any]) -> dict[str, Any]:
    return {k: incident[k] for k in ("id", "kind", "scope", "categories", "started_at", "summary")}


def dispatch_for(engine: Engine, bundle_ids: list[str]) -> dict[str, dict[str, Any]]:
    """fleet_dispatch of each held bundle among these ids."""
    if not bundle_ids:
        return {}
    query = (
        sa.select(bundle_fleet.c.bundle_id, incidents.c.id, incidents.c.summary)
        .select_from(bundle_fleet.join(incidents, incidents.c.id == bundle_fleet.c.hold_incident))
        .where(bundle_fleet.c.bundle_id.in_(bundle_ids))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {r.bundle_id: hold(r.id, json.loads(r.summary)) for r in rows}


def hold(incident_id: str, summary: dict[str, str]) -> dict[str, Any]:
    return {
        "verdict": "hold",
        "incident_id": incident_id,
        "reason": {lang: HOLD_REASON[lang].format(id=incident_id[:8], summary=summary[lang]) for lang in ("zh", "en")},
    }


def bundle_links(engine: Engine, bundle_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(bundle_fleet).where(bundle_fleet.c.bundle_id == bundle_id)).mappings().first()
    return dict(row) if row else None


def header(notices: list[dict[str, Any]]) -> str:
    """The incidents as one header value: compact JSON, non-ASCII escaped."""
    return json.dumps(notices, separators=(",", ":"), sort_keys=True)
