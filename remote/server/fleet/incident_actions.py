"""What support does to an incident: acknowledge it, add a note, resolve it, or dismiss it
("not an outage"). Each action is a row of `incident_actions` (who, when, what, a note),
written in one transaction with its effect and its webhook (incident.acknowledged,
incident.resolved, incident.dismissed).

Dismissing an outage releases the bundles it holds (their dispatch is the terminal's own
again) and remembers its failing terminals (incidents.dismiss, the detector's side); the
incident keeps its row with status `dismissed`, so the detector's figures count it as a
false positive.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import audit, db
from remote.server.fleet import incidents, webhooks
from remote.server.fleet.schema import incident_actions, incidents as incidents_t
from remote.server_settings import WebhookSettings

EVENTS = {"acknowledged": "incident.acknowledged", "resolved": "incident.resolved", "dismissed": "incident.dismissed"}
MAX_NOTE = 4000


class Refused(Exception):
    """The action does not apply to the incident as it stands (HTTP status, code, detail)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def acknowledge(engine: Engine, hooks: WebhookSettings, incident_id: str, who: str, note: str | None = None, source: str = "api") -> dict[str, Any]:
    """Someone is on it. Acknowledging again changes nothing (the first one stays)."""
    with db.writing(engine) as conn:
        row = _locked(conn, incident_id)
        if row["acknowledged_at"] is None:
            at = db.now()
            conn.execute(incidents_t.update().where(incidents_t.c.id == incident_id).values(acknowledged_at=at, acknowledged_by=who))
            _record(conn, hooks, incident_id, (at, who, source), "acknowledged", note)
    return detail(engine, incident_id)


def add_note(engine: Engine, incident_id: str, who: str, note: str, source: str = "api") -> dict[str, Any]:
    text = (note or "").strip()[:MAX_NOTE]
    if not text:
        raise Refused(422, "empty_note", "the note is empty")
    with db.writing(engine) as conn:
        _locked(conn, incident_id)
        _record(conn, None, incident_id, (db.now(), who, source), "note", text)
    return detail(engine, incident_id)


def resolve(engine: Engine, hooks: WebhookSettings, incident_id: str, who: str, note: str | None = None, source: str = "api") -> dict[str, Any]:
    """Close an open incident now: the fault is fixed (its holds stay: they were right)."""
    with db.writing(engine) as conn:
        row = _locked(conn, incident_id)
        if row["status"] != "open":
            raise Refused(409, "not_open", f"the incident is {row['status']}, not open")
        at = db.now()
        incidents.close(conn, incident_id, at)
        _record(conn, hooks, incident_id, (at, who, source), "resolved", note)
    return detail(engine, incident_id)


def dismiss(engine: Engine, hooks: WebhookSettings, incident_id: str, who: str, note: str | None = None, source: str = "api") -> dict[str, Any]:
    """Not an outage: open or closed, it becomes `dismissed` and its holds are released."""
    with db.writing(engine) as conn:
        row = _locked(conn, incident_id)
        if row["status"] == "dismissed":
            raise Refused(409, "dismissed", "the incident is dismissed already")
        at = db.now()
        if row["kind"] == "outage":  # its holds released, its failing terminals remembered (incidents.dismiss)
            incidents.dismiss(conn, incident_id)
        else:
            conn.execute(
                incidents_t.update().where(incidents_t.c.id == incident_id)
                .values(status="dismissed", open_key=None, ended_at=row["ended_at"] or at)
            )  # fmt: skip
        _record(conn, hooks, incident_id, (at, who, source), "dismissed", note)
    return detail(engine, incident_id)


def _locked(conn: sa.Connection, incident_id: str) -> Any:
    row = conn.execute(sa.select(incidents_t).where(incidents_t.c.id == incident_id).with_for_update()).mappings().first()
    if row is None:
        raise Refused(404, "no_incident", "no incident with this id")
    return row


def _record(conn: sa.Connection, hooks: WebhookSettings | None, incident_id: str, done: tuple[str, str, str], action: str, note: str | None) -> None:
    """One action row (done: when, who, from where), and its webhook."""
    at, who, source = done
    note = (note or "").strip()[:MAX_NOTE] or None
    conn.execute(incident_actions.insert().values(incident_id=incident_id, at=at, by=who, action=action, note=note, source=source))
    if hooks is not None and action in EVENTS:
        row = conn.execute(sa.select(incidents_t).where(incidents_t.c.id == incident_id)).mappings().one()
        data = dict(incidents.view(row), action={"at": at, "by": who, "note": note})
        webhooks.enqueue(conn, hooks, EVENTS[action], incident_id, data)


def history(engine: Engine, incident_id: str) -> list[dict[str, Any]]:
    a = incident_actions.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(a.at, a.by, a.action, a.note).where(a.incident_id == incident_id).order_by(a.at, a.id)).mappings()
        return [dict(r) for r in rows]


def detail(engine: Engine, incident_id: str) -> dict[str, Any]:
    """The incident with its notes and actions (the API's answer)."""
    found = incidents.get_incident(engine, incident_id)
    if found is None:
        raise Refused(404, "no_incident", "no incident with this id")
    actions = history(engine, incident_id)
    return dict(found, actions=actions, notes=[a for a in actions if a["action"] == "note"])


def audit_entries(engine: Engine, filters: dict[str, str], before: tuple[str, str] | None, limit: int) -> list[dict[str, Any]]:
    """The actions as entries of the audit log (audit.py's sources), newest first:
    action `incident.<action>`, object `incident` and its id, the note as detail."""
    a = incident_actions.c
    query = sa.select(incident_actions).order_by(a.at.desc(), a.id.desc()).limit(limit)
    if filters.get("object_kind") not in (None, "", "incident"):
        return []
    if filters.get("actor"):
        query = query.where(a.by == filters["actor"])
    if filters.get("action"):
        query = query.where(a.action == filters["action"].removeprefix("incident."))
    if filters.get("object_id"):
        query = query.where(a.incident_id == filters["object_id"])
    if before is not None:
        query = query.where(a.at <= before[0])
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        {"id": f"i{r['id']:012d}", "at": r["at"], "actor": r["by"], "source": r["source"] or "api", "action": f"incident.{r['action']}",
         "object_kind": "incident", "object_id": r["incident_id"], "detail": {"note": r["note"]} if r["note"] else {}}
        for r in rows
    ]  # fmt: skip


audit.add_source(audit_entries)
