"""Terminals as the fleet sees them: versions, labels, health, trends, status."""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import db
from remote.server.db import terminals
from remote.server.fleet import baseline, labels, sql, timing
from remote.server.fleet.schema import fleet_terminals, heartbeats, scope_members, scope_seen_hours, terminal_days, terminal_labels
from remote.server_settings import FleetSettings, TrendRule

HEALTH_COLUMNS = (
    "battery_pct", "battery_wear_ratio", "battery_full_pct", "battery_cycle_count", "emmc_life_used_pct",
    "free_mib", "signal_dbm", "max_temp_c", "memory_available_mib",
)  # fmt: skip


@dataclass(frozen=True)
class Sighting:
    """One heartbeat or bundle: who, on what versions, with which labels, at what event time."""

    terminal_id: str
    event_at: str
    model: str
    firmware: str
    app_version: str
    agent_version: str
    labels: dict[str, str] | None  # None: the sender said nothing of labels (keep the stored)
    clamped: bool
    received_at: str
    heartbeat: bool
    health: dict[str, Any] | None = None  # a heartbeat's health readings

    def health_row(self) -> dict[str, Any]:
        """The readings as the HEALTH_COLUMNS of `heartbeats` and the terminal's row hold them."""
        return {k: (self.health or {}).get(k) for k in HEALTH_COLUMNS}


def scope_key(scope: dict[str, str]) -> str:
    return "&".join(f"{k}={scope[k]}" for k in sorted(scope))


def parse_scope_key(key: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in key.split("&") if "=" in part)


def scopes_of(labels: dict[str, str], settings: FleetSettings) -> list[str]:
    """The outage scopes a terminal with these labels belongs to."""
    out = []
    for keys in settings.outage_scopes:
        if keys and all(k in labels for k in keys):
            out.append(scope_key({k: labels[k] for k in keys}))
    return out


def record(conn: sa.Connection, seen: Sighting, settings: FleetSettings) -> tuple[dict[str, str], Any]:
    """Update the terminal's row if this sighting is its newest; the labels now in force
    (the operator's and the observed, labels.py): what it is filtered and cut into scopes by,
    and the row as it was. The row is locked first, as relabel() locks it: the two never
    rewrite its scopes at once. A heartbeat's health becomes the row's when the heartbeat is
    the terminal's newest."""
    row = _locked_row(conn, seen.terminal_id)
    stored_labels = json.loads(row["labels"] or "{}")
    stored_claims, changes = labels.stored(row)
    newest = row["last_seen_at"] is None or seen.event_at >= row["last_seen_at"]
    claimed = seen.labels if seen.labels is not None and newest else stored_claims
    values: dict[str, Any] = {}
    if newest:
        if row["last_seen_at"] is not None:
            moved = labels.note_change(changes, stored_claims, claimed, seen.event_at, settings)
            if moved != changes:
                values["observed_changes"] = json.dumps(moved)
        values.update(
            model=seen.model, firmware=seen.firmware, app_version=seen.app_version,
            agent_version=seen.agent_version, claimed_labels=json.dumps(claimed, sort_keys=True), last_seen_at=seen.event_at,
        )  # fmt: skip
    if row["first_seen_at"] is None or seen.event_at < row["first_seen_at"]:  # its oldest event time (breadth.py)
        values["first_seen_at"] = seen.event_at
    if seen.heartbeat and (row["last_heartbeat_at"] is None or seen.event_at >= row["last_heartbeat_at"]):
        if seen.event_at != row["last_heartbeat_at"]:
            values["last_heartbeat_at"] = seen.event_at
        values["health"] = json.dumps(seen.health_row())
    if seen.clamped:
        values["clock_flagged_at"] = seen.received_at
    in_force = labels.in_force(labels.operator_of(conn, seen.terminal_id), claimed, settings)
    if in_force != stored_labels:
        values["labels"] = json.dumps(in_force, sort_keys=True)
    if values:
        conn.execute(_UPDATE_ROW, dict(values, tid=seen.terminal_id))  # the columns set: the parameters' keys
    if in_force != stored_labels:
        _move_scopes(conn, {seen.terminal_id: in_force}, {seen.terminal_id: row["last_seen_at"]}, settings)
    if newest:
        baseline.see(conn, seen.terminal_id, seen.event_at, settings)
    day = timing.day(seen.event_at)
    if row["last_seen_at"] is None or timing.day(row["last_seen_at"]) != day:  # the day of its last sighting has its row
        sql.insert_new(
            conn, terminal_days, ["terminal_id", "day"],
            [{"terminal_id": seen.terminal_id, "day": day, "model": seen.model, "firmware": seen.firmware, "app_version": seen.app_version}],
        )  # fmt: skip
    return in_force, row


# Statements every arrival runs, built once with their values as parameters (building one
# cost more Python than SQLite takes to run it, and the fleet queue's drainer runs them per
# bundle and heartbeat inside the write lock).
_LOCKED_ROW = sa.select(fleet_terminals).where(fleet_terminals.c.id == sa.bindparam("tid")).with_for_update()
_UPDATE_ROW = fleet_terminals.update().where(fleet_terminals.c.id == sa.bindparam("tid"))
_SET_RISK = (
    fleet_terminals.update().where(fleet_terminals.c.id == sa.bindparam("tid"))
    .values(risk=sa.bindparam("b_risk"), risk_metric=sa.bindparam("b_risk_metric"))
)  # fmt: skip


def _locked_row(conn: sa.Connection, terminal_id: str) -> Any:
    """The terminal's fleet row, locked; made first at its first sighting, so that even
    then nothing rewrites its labels and scopes beside this transaction."""
    row = conn.execute(_LOCKED_ROW, {"tid": terminal_id}).mappings().first()
    if row is None:
        labels.ensure_row(conn, terminal_id)
        row = conn.execute(_LOCKED_ROW, {"tid": terminal_id}).mappings().one()
    return row


RELABEL_CHUNK = 200  # terminals per statement: 200 x 32 keys x 2 stays under SQLite's 32,766 parameters


def relabel(conn: sa.Connection, terminal_id: str, changes: dict[str, str | None], source: str, settings: FleetSettings) -> bool:
    """Set or remove (None or "") operator labels of one terminal and move it between
    scopes at once; whether its operator labels changed."""
    return bool(relabel_many(conn, [(terminal_id, changes)], source, settings))


def relabel_many(
    conn: sa.Connection, rows: list[tuple[str, dict[str, str | None]]], source: str, settings: FleetSettings,
) -> set[str]:  # fmt: skip
    """relabel() for many terminals (one row each), a few statements per chunk of them: a
    TMS import of 100,000 terminals is one pass, not a million round trips. The terminals
    whose operator labels changed."""
    for _, changes in rows:
        labels.check(changes)
    changed: set[str] = set()
    for i in range(0, len(rows), RELABEL_CHUNK):
        changed |= _relabel_chunk(conn, dict(rows[i : i + RELABEL_CHUNK]), source, settings)
    return changed


def _relabel_chunk(conn: sa.Connection, rows: dict[str, dict[str, str | None]], source: str, settings: FleetSettings) -> set[str]:
    ids = sorted(rows)
    f = fleet_terminals.c
    conn.execute(sql.insert(conn, fleet_terminals).on_conflict_do_nothing(), [{"id": t, "labels": "{}"} for t in ids])
    # locked in id order, as record() locks one: two writers never wait on each other crosswise
    fleet = {r["id"]: r for r in conn.execute(sa.select(fleet_terminals).where(f.id.in_(ids)).order_by(f.id).with_for_update()).mappings()}
    before = labels.operator_of_many(conn, ids)
    operator = {t: labels.apply(t, before.get(t, {}), rows[t]) for t in ids}
    changed = {t for t in ids if operator[t] != before.get(t, {})}
    labels.write_operator(conn, {t: (before.get(t, {}), operator[t]) for t in changed}, source, db.now())
    moving = {}
    for t in sorted(changed):
        in_force = labels.in_force(operator[t], labels.stored(fleet[t])[0], settings)
        if in_force != json.loads(fleet[t]["labels"] or "{}"):
            moving[t] = in_force
    if moving:
        conn.execute(
            fleet_terminals.update().where(f.id == sa.bindparam("tid")).values(labels=sa.bindparam("in_force")),
            [{"tid": t, "in_force": json.dumps(v, sort_keys=True)} for t, v in moving.items()],
        )
        _move_scopes(conn, moving, {t: fleet[t]["last_seen_at"] for t in moving}, settings)
    return changed


def _move_scopes(conn: sa.Connection, moving: dict[str, dict[str, str]], seen: dict[str, str | None], settings: FleetSettings) -> None:
    """The terminals' labels in force, their scopes, and the scopes' active counts (the
    members as of `seen`, their last sighting before), written for all of them at once."""
    ids = sorted(moving)
    m = scope_members.c
    old = conn.execute(sa.select(m.scope_key, m.seen_at).where(m.terminal_id.in_(ids)).with_for_update()).all()
    conn.execute(terminal_labels.delete().where(terminal_labels.c.terminal_id.in_(ids)))
    conn.execute(scope_members.delete().where(m.terminal_id.in_(ids)))
    label_rows = [{"terminal_id": t, "key": k, "value": v} for t in ids for k, v in moving[t].items()]
    if label_rows:
        conn.execute(terminal_labels.insert(), label_rows)
    member_rows = [{"scope_key": key, "terminal_id": t, "seen_at": seen[t]} for t in ids for key in scopes_of(moving[t], settings)]
    if member_rows:
        conn.execute(scope_members.insert(), member_rows)
    count: Counter[tuple[str, str]] = Counter()
    for key, at in old:
        if at:
            count[(key, baseline.hour(at))] -= 1
    for r in member_rows:
        if r["seen_at"]:
            count[(r["scope_key"], baseline.hour(r["seen_at"]))] += 1
    changes = [{"scope_key": k, "hour": h, "members": n} for (k, h), n in sorted(count.items()) if n]
    sql.move_counts(conn, scope_seen_hours, ["scope_key", "hour"], changes, "members")


def label_terminal(engine: Engine, terminal_id: str, changes: dict[str, str | None], source: str, settings: FleetSettings) -> bool:
    """relabel() an enrolled terminal in a transaction of its own; LookupError for another."""
    with db.writing(engine) as conn:
        if conn.execute(sa.select(terminals.c.id).where(terminals.c.id == terminal_id)).first() is None:
            raise LookupError(f"no terminal {terminal_id!r} is enrolled")
        return relabel(conn, terminal_id, changes, source, settings)


counts_toward_outages = labels.counts_toward_outages  # what the engine asks before an outage event


def add_heartbeat(conn: sa.Connection, seen: Sighting, counters: dict[str, Any]) -> None:
    """The heartbeat's row (its health readings, for the trends); record() set the terminal's."""
    conn.execute(heartbeats.insert(), dict(
        seen.health_row(), terminal_id=seen.terminal_id, sent_at=seen.event_at,
        received_at=seen.received_at, clock_clamped=seen.clamped, counters=json.dumps(counters),
    ))  # fmt: skip


# -- trends -------------------------------------------------------------------------------


def assess_risk(conn: sa.Connection, terminal_id: str, settings: FleetSettings, stored: str | None) -> dict[str, Any] | None:
    """Fit each trend rule on the terminal's newest heartbeats; the earliest projected
    crossing within the horizon (or a value already past its threshold), else None; written
    to the terminal's row when it differs from what the row holds (`stored`)."""
    columns = [heartbeats.c.sent_at] + [heartbeats.c[r.metric] for r in settings.trends if r.metric in heartbeats.c]
    rows = conn.execute(
        sa.select(*columns).where(heartbeats.c.terminal_id == terminal_id)
        .order_by(heartbeats.c.sent_at.desc()).limit(settings.trend_history)
    ).mappings().all()  # fmt: skip
    found = [risk for rule in settings.trends if (risk := _project(rule, rows, settings.at_risk_horizon_days))]
    risk = min(found, key=lambda r: r["projected_at"], default=None)
    text = json.dumps(risk, ensure_ascii=False) if risk else None
    if text != stored:
        conn.execute(_SET_RISK, {"tid": terminal_id, "b_risk": text, "b_risk_metric": risk["metric"] if risk else None})
    return risk


def _project(rule: TrendRule, rows: list[Any], horizon_days: float) -> dict[str, Any] | None:
    if not rows or rule.metric not in rows[0]:
        return None
    points = [(timing.as_datetime(r["sent_at"]).timestamp() / 86400, r[rule.metric]) for r in rows if r[rule.metric] is not None]
    if len(points) < rule.min_points:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    if var_t <= 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var_t
    last_t = max(t for t, _ in points)
    now_value = mean_v + slope * (last_t - mean_t)
    below = rule.direction == "below"
    crossed = now_value <= rule.threshold if below else now_value >= rule.threshold
    if crossed:
        days = 0.0
    elif (slope < 0) == below and slope != 0:
        days = (rule.threshold - now_value) / slope
        if days > horizon_days:
            return None
    else:
        return None
    projected = timing.shift(_stamp_days(last_t), days=days)
    value = round(now_value, 4)
    return {
        "metric": rule.metric,
        "value": value,
        "threshold": rule.threshold,
        "projected_at": projected,
        "reason": {
            "en": f"{rule.title_en}: {value:g} now, crosses {rule.threshold:g} around {projected[:10]}",
            "zh": f"{rule.title_zh}：当前 {value:g}，预计 {projected[:10]} 前后越过 {rule.threshold:g}",
        },
    }


def _stamp_days(days: float) -> str:
    return db.stamp(datetime.fromtimestamp(days * 86400, UTC))


# -- reading ------------------------------------------------------------------------------


def _missing_cutoff(now: str, settings: FleetSettings) -> str:
    return timing.shift(now, hours=-settings.missing_after_hours)


def status_of(row: dict[str, Any], cutoff: str) -> str:
    seen = row.get("last_seen_at") or row.get("created_at")
    if seen is None or seen < cutoff:
        return "missing"
    return "at_risk" if row.get("risk_metric") else "ok"


def _view(row: dict[str, Any], cutoff: str, settings: FleetSettings) -> dict[str, Any]:
    claimed, changes = labels.stored(row)
    return {
        "id": row["id"],
        "status": status_of(row, cutoff),
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
        "labels": json.loads(row["labels"] or "{}"),
        "claimed_labels": claimed,
        "labels_settled": not row["last_seen_at"] or labels.settled(changes, row["last_seen_at"], settings),
        "model": row["model"],
        "firmware": row["firmware"],
        "app_version": row["app_version"],
        "agent_version": row["agent_version"],
        "last_heartbeat_at": row["last_heartbeat_at"],
        "last_seen_at": row["last_seen_at"],
        "health": json.loads(row["health"]) if row["health"] else None,
        "risk": json.loads(row["risk"]) if row["risk"] else None,
        "clock_flagged_at": row["clock_flagged_at"],
    }


def _query() -> sa.Select:
    f = fleet_terminals.c
    return sa.select(
        terminals.c.id, terminals.c.created_at, terminals.c.revoked_at, f.model, f.firmware, f.app_version, f.agent_version,
        sa.func.coalesce(f.labels, "{}").label("labels"), f.claimed_labels, f.observed_changes, f.last_heartbeat_at, f.last_seen_at, f.health,
        f.risk, f.risk_metric, f.clock_flagged_at,
    ).select_from(terminals.outerjoin(fleet_terminals, f.id == terminals.c.id))  # fmt: skip


def list_terminals(
    engine: Engine, settings: FleetSettings, now: str, status: str | None, labels: dict[str, str],
    limit: int, cursor: str | None = None, model: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    """By id; `status` ok | missing | at_risk; every label K=V must match."""
    cutoff = _missing_cutoff(now, settings)
    f = fleet_terminals.c
    seen = sa.func.coalesce(f.last_seen_at, terminals.c.created_at)
    query = _query()
    if status == "missing":
        query = query.where(seen < cutoff)
    elif status == "at_risk":
        query = query.where(seen >= cutoff, f.risk_metric.is_not(None))
    elif status == "ok":
        query = query.where(seen >= cutoff, f.risk_metric.is_(None))
    if model:
        query = query.where(f.model == model)
    for key, value in labels.items():
        query = query.where(
            terminals.c.id.in_(sa.select(terminal_labels.c.terminal_id).where(terminal_labels.c.key == key, terminal_labels.c.value == value))
        )
    if cursor:
        query = query.where(terminals.c.id > _decode(cursor))
    query = query.order_by(terminals.c.id).limit(limit + 1)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return [_view(r, cutoff, settings) for r in rows], _encode(rows[-1]["id"]) if more and rows else None


def get_terminal(engine: Engine, settings: FleetSettings, terminal_id: str, now: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(_query().where(terminals.c.id == terminal_id)).mappings().first()
    return _view(dict(row), _missing_cutoff(now, settings), settings) if row else None


def status_counts(engine: Engine, settings: FleetSettings, now: str) -> dict[str, int]:
    cutoff = _missing_cutoff(now, settings)
    f = fleet_terminals.c
    seen = sa.func.coalesce(f.last_seen_at, terminals.c.created_at)
    base = sa.select(sa.func.count()).select_from(terminals.outerjoin(fleet_terminals, f.id == terminals.c.id)).where(terminals.c.revoked_at.is_(None))
    with engine.connect() as conn:
        total = conn.execute(base).scalar_one()
        missing = conn.execute(base.where(seen < cutoff)).scalar_one()
        at_risk = conn.execute(base.where(seen >= cutoff, f.risk_metric.is_not(None))).scalar_one()
    return {"ok": total - missing - at_risk, "missing": missing, "at_risk": at_risk, "total": total}


def health_series(engine: Engine, terminal_id: str, limit: int = 500) -> list[dict[str, Any]]:
    query = (
        sa.select(heartbeats.c.sent_at, *[heartbeats.c[c] for c in HEALTH_COLUMNS])
        .where(heartbeats.c.terminal_id == terminal_id)
        .order_by(heartbeats.c.sent_at.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r) for r in reversed(conn.execute(query).mappings().all())]


def _encode(terminal_id: str) -> str:
    return base64.urlsafe_b64encode(terminal_id.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeError):
        raise ValueError("cursor is not one this server issued") from None
