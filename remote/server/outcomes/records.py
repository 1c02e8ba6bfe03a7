"""Record and read visit outcomes (docs/outcomes.md).

An outcome says what a visit (or a remote fix) found for one bundle: a knowledge-base cause
id, `nothing` (no fault found) or `other` with a note; whether it was fixed; who and when.
A bundle has one current outcome, the one of the latest visit; every outcome stays in the
history. The outcome id makes a replay harmless: the same id saying the same again is
answered with what is stored, the same id saying something else is refused.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from remote.outcome_wire import MAX_NOTE_CHARS, NOTHING, OTHER, canonical
from remote.redact import redact_text
from remote.server import db
from remote.server.db import bundles
from remote.server.outcomes.knowledge import KnowledgeView
from remote.server.outcomes.schema import outcome_history, outcomes

VIAS = ("api", "terminal", "page")
MAX_BY_NAME = 128  # a user's name; a terminal's record says at most MAX_BY_CHARS (remote/outcome_wire.py)
DISPATCHED = ("onsite", "remote")  # verdicts that send someone or make support act


class OutcomeError(Exception):
    """An outcome refused: HTTP status, short code, what was wrong for a person."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Said:
    """What one outcome says, checked (`said`)."""

    outcome_id: str
    found: str
    fixed: bool | None
    note: str
    by: str
    via: str
    visited_at: str  # db stamp

    def digest(self, bundle_id: str) -> str:
        body = {k: v for k, v in asdict(self).items() if k != "outcome_id"}
        return hashlib.sha256(canonical(dict(body, bundle_id=bundle_id))).hexdigest()


def said(
    kb: KnowledgeView,
    found: str,
    fixed: bool | None,
    note: str,
    by: str,
    via: str,
    visited_at: str | None,
    outcome_id: str | None,
) -> Said:
    """Check what an outcome says; raise OutcomeError (422) with a clear reason."""
    found = found.strip()
    if found not in (NOTHING, OTHER) and found not in kb.dispatch:
        close = difflib.get_close_matches(found, list(kb.dispatch), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OutcomeError(422, "unknown_cause", f"{found!r} is not a knowledge-base cause id, nor nothing or other{hint}")
    note = redact_text(note.strip())[0]
    if len(note) > MAX_NOTE_CHARS:
        raise OutcomeError(422, "note_too_long", f"a note has at most {MAX_NOTE_CHARS} characters")
    if found == OTHER and not note:
        raise OutcomeError(422, "note_required", "found other: the note must say what was found")
    if fixed is None and found != NOTHING:
        raise OutcomeError(422, "fixed_required", "say whether the visit fixed it (fixed true or false)")
    by = by.strip()
    if len(by) > MAX_BY_NAME or not by.isprintable():
        raise OutcomeError(422, "bad_by", f"who closed the visit: at most {MAX_BY_NAME} printable characters")
    if via not in VIAS:
        raise OutcomeError(422, "bad_via", f"via is one of {', '.join(VIAS)}")
    now = db.now()
    stamp = now if visited_at is None else _stamp(visited_at)
    return Said(_outcome_id(outcome_id), found, fixed, note, by, via, min(stamp, now))


def _stamp(text: str) -> str:
    try:
        return db.stamp(db.parse_time(text))
    except (ValueError, OverflowError):
        raise OutcomeError(422, "bad_time", "visited_at is an ISO-8601 time with a zone, e.g. 2026-01-02T10:00:00Z") from None


def _outcome_id(value: str | None) -> str:
    if value is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise OutcomeError(422, "bad_outcome_id", "outcome_id is a UUID") from None


def dispatched_bundle(engine: Engine, terminal_id: str, before: str) -> dict[str, Any] | None:
    """The terminal's newest bundle dispatched onsite or remote, created at or before `before`."""
    query = (
        sa.select(bundles)
        .where(bundles.c.terminal_id == terminal_id, bundles.c.verdict.in_(DISPATCHED), bundles.c.created_at <= before)
        .order_by(bundles.c.created_at.desc(), bundles.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def record(engine: Engine, bundle: dict[str, Any], diagnosis: dict[str, Any], say: Said) -> tuple[dict[str, Any], bool]:
    """Store an outcome of `bundle` (its row) whose diagnosis document is `diagnosis`;
    (the outcome as answered, True) when new, (the stored one, False) for a replay."""
    digest = say.digest(bundle["id"])
    stored = _history_row(engine, say.outcome_id)
    if stored is not None:
        return _replayed(engine, stored, digest)
    recorded = db.now()
    rank_key = f"{say.visited_at}|{recorded}|{say.outcome_id}"
    said_cols = {
        "outcome_id": say.outcome_id, "found": say.found, "fixed": say.fixed, "note": say.note,
        "by_name": say.by, "via": say.via, "visited_at": say.visited_at, "recorded_at": recorded,
        "rank_key": rank_key,
    }  # fmt: skip
    current = dict(said_cols, **_prediction(bundle, diagnosis))
    try:
        with db.writing(engine) as conn:
            conn.execute(outcome_history.insert().values(**said_cols, bundle_id=bundle["id"], digest=digest))
            _keep_latest(conn, current)
    except IntegrityError:  # the same outcome id stored meanwhile by another request
        stored = _history_row(engine, say.outcome_id)
        if stored is None:
            raise
        return _replayed(engine, stored, digest)
    return answer(engine, dict(said_cols, bundle_id=bundle["id"])), True


def _prediction(bundle: dict[str, Any], diagnosis: dict[str, Any]) -> dict[str, Any]:
    """What the bundle predicted, copied beside its outcome."""
    causes = diagnosis.get("causes") if isinstance(diagnosis.get("causes"), list) else []
    ids = [c["id"] for c in causes[:3] if isinstance(c, dict) and isinstance(c.get("id"), str)]
    learned = diagnosis.get("learned") if isinstance(diagnosis.get("learned"), dict) else {}
    applied = learned.get("applied") is True and isinstance(learned.get("hash"), str)
    return {
        "bundle_id": bundle["id"],
        "terminal_id": bundle["terminal_id"],
        "model": bundle["model"],
        "firmware": bundle["firmware"],
        "scheme": bundle["scheme"],
        "code": bundle["code"],
        "verdict": bundle["verdict"],
        "predicted": json.dumps(ids),
        "learned_hash": learned["hash"][:16] if applied else None,
    }


def _keep_latest(conn: sa.Connection, row: dict[str, Any]) -> None:
    """Insert the bundle's current outcome, or replace it when this visit is later."""
    dialect = sa.dialects.postgresql if conn.dialect.name == "postgresql" else sa.dialects.sqlite
    statement = dialect.insert(outcomes).values(**row)
    changed = {k: statement.excluded[k] for k in row if k != "bundle_id"}
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[outcomes.c.bundle_id], set_=changed, where=outcomes.c.rank_key < statement.excluded.rank_key
        )
    )


def _history_row(engine: Engine, outcome_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(outcome_history).where(outcome_history.c.outcome_id == outcome_id)).mappings().first()
    return dict(row) if row else None


def _replayed(engine: Engine, stored: dict[str, Any], digest: str) -> tuple[dict[str, Any], bool]:
    if stored["digest"] != digest:
        raise OutcomeError(409, "outcome_id_reused", "this outcome id was recorded before, saying something else")
    return answer(engine, stored), False


def answer(engine: Engine, row: dict[str, Any]) -> dict[str, Any]:
    """An outcome as the API shows it."""
    with engine.connect() as conn:
        current = conn.execute(sa.select(outcomes.c.outcome_id).where(outcomes.c.bundle_id == row["bundle_id"])).scalar()
    return _shown(row, current)


def _shown(row: dict[str, Any], current_id: str | None) -> dict[str, Any]:
    keys = ("outcome_id", "bundle_id", "found", "fixed", "note", "via", "visited_at", "recorded_at")
    return {**{k: row[k] for k in keys}, "by": row["by_name"], "current": row["outcome_id"] == current_id}


def of_bundle(engine: Engine, bundle_id: str) -> dict[str, Any]:
    """The bundle's current outcome (None before any), its history newest visit first, and
    what the bundle predicted."""
    with engine.connect() as conn:
        current = conn.execute(sa.select(outcomes).where(outcomes.c.bundle_id == bundle_id)).mappings().first()
        history = conn.execute(
            sa.select(outcome_history)
            .where(outcome_history.c.bundle_id == bundle_id)
            .order_by(outcome_history.c.rank_key.desc())
        ).mappings().all()
    current_id = current["outcome_id"] if current else None
    shown = [_shown(dict(r), current_id) for r in history]
    return {
        "bundle_id": bundle_id,
        "current": next((s for s in shown if s["current"]), None),
        "history": shown,
        "predicted": json.loads(current["predicted"]) if current else None,
        "learned_hash": current["learned_hash"] if current else None,
    }
