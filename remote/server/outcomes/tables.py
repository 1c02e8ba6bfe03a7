"""Learned tables kept, versioned and switched (docs/outcomes.md).

Every recorded outcome rebuilds the tables (learning.build over the current outcomes in the
learning window); a model's table gets a new version only when its content hash changes, so
versions are the table's real history. An operator can switch learning off for the fleet or
one model (terminals then receive an empty table), and revert a model to an earlier version:
the old content becomes the newest version and the model stays pinned to it, not rebuilt,
until resumed.
"""

from __future__ import annotations

import json
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from remote.outcome_wire import NOTHING, OTHER, code_key, table_hash
from remote.server import db
from remote.server.db import bundles
from remote.server.fleet.schema import fleet_terminals
from remote.server.outcomes import learning
from remote.server.outcomes.knowledge import KnowledgeView
from remote.server.outcomes.learning import FLEET, Params, Visit
from remote.server.outcomes.schema import learned_tables, learning_control, outcomes


class TableError(Exception):
    """An operator request the tables do not allow (unknown model or version)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def visits(engine: Engine, window_days: int, now: datetime | None = None) -> list[Visit]:
    """Current outcomes that found a cause, of visits inside the learning window."""
    query = sa.select(outcomes.c.terminal_id, outcomes.c.model, outcomes.c.scheme, outcomes.c.code, outcomes.c.found).where(
        outcomes.c.found.not_in((NOTHING, OTHER))
    )
    if window_days:
        since = (now or datetime.now(UTC)) - timedelta(days=window_days)
        query = query.where(outcomes.c.visited_at >= db.stamp(since))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [Visit(r.terminal_id, r.model, key, r.found) for r in rows if (key := code_key(r.scheme, r.code))]


def rebuild(engine: Engine, kb: KnowledgeView, params: Params, window_days: int, by: str) -> dict[str, int]:
    """Build every table from the outcomes; store those that changed. {model: new version}."""
    control = _control(engine)
    if not control.get(FLEET, {}).get("enabled", True):
        return {}
    built = learning.build(kb, visits(engine, window_days), params)
    for model in _stored_models(engine) - set(built):  # its visits left the window: the fleet's estimate
        built[model] = built[FLEET]
    changed = {}
    for model, codes in built.items():
        state = control.get(model, {})
        if state.get("pinned") is not None:
            continue
        newest = latest(engine, model)
        if newest is None or newest["hash"] != table_hash(model, codes):
            changed[model] = _store(engine, model, codes, "learned", by)
    return changed


def _stored_models(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(learned_tables.c.model).distinct()).scalars())


def _store(engine: Engine, model: str, codes: dict[str, Any], origin: str, by: str) -> int:
    """The model's table as its next version."""
    for _ in range(5):
        newest = latest(engine, model)
        number = 1 if newest is None else newest["version"] + 1
        row = {
            "model": model, "version": number, "hash": table_hash(model, codes),
            "content": json.dumps(codes, sort_keys=True), "origin": origin,
            "visits": max((e["N"] for e in codes.values()), default=0), "built_at": db.now(), "built_by": by,
        }  # fmt: skip
        try:
            with db.writing(engine) as conn:
                conn.execute(learned_tables.insert().values(**row))
            _forget_served(engine)
            return number
        except IntegrityError:  # another server stored this version first: take the next
            continue
    raise RuntimeError(f"could not store a new version of the {model!r} table")


def latest(engine: Engine, model: str) -> dict[str, Any] | None:
    query = sa.select(learned_tables).where(learned_tables.c.model == model).order_by(learned_tables.c.version.desc()).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def version(engine: Engine, model: str, number: int) -> dict[str, Any] | None:
    query = sa.select(learned_tables).where(learned_tables.c.model == model, learned_tables.c.version == number)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def served(engine: Engine, model: str) -> dict[str, Any]:
    """The table a terminal of `model` receives: its model's newest, else the fleet's; an
    empty one while learning is off for the fleet or the model (or nothing was learned yet)."""
    control = _control(engine)
    on = control.get(FLEET, {}).get("enabled", True) and control.get(model, {}).get("enabled", True)
    row = (latest(engine, model) or latest(engine, FLEET)) if on else None
    if row is None:
        return learning.document(model, 0, table_hash(model, {}), {})
    return learning.document(row["model"], row["version"], row["hash"], json.loads(row["content"]))


def for_heartbeat(engine: Engine, terminal_id: str, held: str | None, model: str = "") -> dict[str, Any] | None:
    """The table a heartbeat's answer carries: the one the terminal should hold, when the hash
    of the one it holds (`held`, None: none) differs; else None, and the answer stays small.
    `model`: the one the heartbeat states (else the inventory's). Read through a cache of
    SERVED_CACHE_S: every heartbeat asks, tables change only when outcomes come."""
    doc = _served_cached(engine, model or model_of_terminal(engine, terminal_id))
    return None if doc["hash"] == held else doc


SERVED_CACHE_S = 10.0  # another server process's change reaches heartbeats within this; this process's at once
_served: weakref.WeakKeyDictionary[Engine, dict[str, tuple[float, dict[str, Any]]]] = weakref.WeakKeyDictionary()


def _served_cached(engine: Engine, model: str) -> dict[str, Any]:
    cache = _served.setdefault(engine, {})
    hit = cache.get(model)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    doc = served(engine, model)
    cache[model] = (now + SERVED_CACHE_S, doc)
    return doc


def _forget_served(engine: Engine) -> None:
    """A table or a switch changed here: heartbeats read it again."""
    _served.pop(engine, None)


def model_of_terminal(engine: Engine, terminal_id: str) -> str:
    """The model the inventory knows for a terminal (newest heartbeat or bundle), else ""."""
    newest_bundle = (
        sa.select(bundles.c.model).where(bundles.c.terminal_id == terminal_id).order_by(bundles.c.created_at.desc()).limit(1)
    )
    with engine.connect() as conn:
        found = conn.execute(sa.select(fleet_terminals.c.model).where(fleet_terminals.c.id == terminal_id)).scalar()
        return found or conn.execute(newest_bundle).scalar() or ""


def revert(engine: Engine, model: str, number: int, by: str) -> int:
    """Serve version `number` again, as a new version, and pin the model to it."""
    old = version(engine, model, number)
    if old is None:
        raise TableError("no_version", f"the {model!r} table has no version {number}")
    new = _store(engine, model, json.loads(old["content"]), f"revert:{number}", by)
    _set_control(engine, model, by, pinned=new)
    return new


def resume(engine: Engine, kb: KnowledgeView, params: Params, window_days: int, model: str, by: str) -> dict[str, int]:
    """Unpin a model (learning on again for it) and rebuild."""
    _set_control(engine, model, by, pinned=None, enabled=True)
    return rebuild(engine, kb, params, window_days, by)


def switch(engine: Engine, scope: str, enabled: bool, by: str) -> None:
    """Learning on or off for the fleet (scope FLEET) or one model."""
    _set_control(engine, scope, by, enabled=enabled)


_UNSET: Any = object()


def _set_control(engine: Engine, scope: str, by: str, *, enabled: bool | None = None, pinned: Any = _UNSET) -> None:
    with db.writing(engine) as conn:
        row = conn.execute(sa.select(learning_control).where(learning_control.c.scope == scope)).mappings().first()
        values: dict[str, Any] = {"changed_by": by, "changed_at": db.now()}
        if enabled is not None:
            values["enabled"] = enabled
        if pinned is not _UNSET:
            values["pinned"] = pinned
        if row is None:
            conn.execute(learning_control.insert().values(scope=scope, **{"enabled": True, "pinned": None, **values}))
        else:
            conn.execute(learning_control.update().where(learning_control.c.scope == scope).values(**values))
    _forget_served(engine)


def _control(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r["scope"]: dict(r) for r in conn.execute(sa.select(learning_control)).mappings()}


def status(engine: Engine) -> dict[str, Any]:
    """Whether learning is on, and per model its newest table and switches."""
    control = _control(engine)
    newest = (
        sa.select(learned_tables.c.model, sa.func.max(learned_tables.c.version).label("version"))
        .group_by(learned_tables.c.model)
        .subquery()
    )
    query = sa.select(learned_tables).join(
        newest, sa.and_(learned_tables.c.model == newest.c.model, learned_tables.c.version == newest.c.version)
    )
    with engine.connect() as conn:
        rows = {r["model"]: dict(r) for r in conn.execute(query.order_by(learned_tables.c.model)).mappings()}
    models = []
    for model in sorted(set(rows) | {s for s in control if s != FLEET}):
        row, state = rows.get(model), control.get(model, {})
        models.append({
            "model": model,
            "enabled": state.get("enabled", True),
            "pinned": state.get("pinned"),
            "version": row["version"] if row else None,
            "hash": row["hash"] if row else None,
            "codes": len(json.loads(row["content"])) if row else 0,
            "visits": row["visits"] if row else 0,
            "origin": row["origin"] if row else None,
            "built_at": row["built_at"] if row else None,
        })  # fmt: skip
    fleet = control.get(FLEET, {})
    return {"enabled": fleet.get("enabled", True), "changed_by": fleet.get("changed_by"), "changed_at": fleet.get("changed_at"), "models": models}


def history(engine: Engine, model: str) -> list[dict[str, Any]]:
    """Every version of a model's table, newest first, with its content."""
    query = sa.select(learned_tables).where(learned_tables.c.model == model).order_by(learned_tables.c.version.desc())
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return [dict(r, content=json.loads(r["content"])) for r in rows]
