"""Which labels a terminal is counted by, and who said so.

Outages are cut by labels, so a label is a claim on the detector: five terminals that say
`acquirer=B` could open, and hold, an outage over acquirer B. Two sources are believed:

- the operator's labels (`operator_labels`: set at enrolment, by `posdiag-support terminals
  label` or `import`, or the API), for any key; they win over anything the terminal says;
- the terminal's own observation of `[server.fleet] observed_label_keys` (carrier, link),
  which only the terminal can see.

Everything else a terminal says of its labels is a claim, kept in `claimed_labels` and shown
as a hint, never cut into a scope. A terminal whose observed labels changed more than
`observed_label_max_changes` times within `observed_label_window_hours` of event time is
not counted toward any outage until they settle (docs/fleet.md, "Which labels are trusted").
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from remote import wire
from remote.server.fleet import sql, timing
from remote.server.fleet.schema import fleet_terminals, operator_labels
from remote.server_settings import FleetSettings

SOURCES = ("enrolment", "command", "import", "api")


class LabelError(ValueError):
    """An operator label that breaks the label rules (remote/wire.py)."""


def check(changes: dict[str, str | None]) -> None:
    """Refuse a key or value a terminal would be refused for; None or "" removes a key."""
    for key, value in changes.items():
        problem = wire.label_problem(key, value or "x")
        if problem:
            raise LabelError(f"{key[:40]}: {problem}")


_OPERATOR_OF = sa.select(operator_labels.c.key, operator_labels.c.value).where(operator_labels.c.terminal_id == sa.bindparam("tid"))


def operator_of(conn: sa.Connection, terminal_id: str) -> dict[str, str]:
    return dict(conn.execute(_OPERATOR_OF, {"tid": terminal_id}).all())


def observed(labels: dict[str, str], settings: FleetSettings) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k in settings.observed_label_keys}


def in_force(operator: dict[str, str], claimed: dict[str, str], settings: FleetSettings) -> dict[str, str]:
    """The labels a terminal is listed, filtered and cut into scopes by."""
    return {**observed(claimed, settings), **operator}


def note_change(
    changes: list[str], before: dict[str, str], after: dict[str, str], event_at: str, settings: FleetSettings,
) -> list[str]:  # fmt: skip
    """The event times of observed-label changes within the window before `event_at`."""
    since = timing.shift(event_at, hours=-settings.observed_label_window_hours)
    kept = [c for c in changes if c > since]
    if observed(before, settings) != observed(after, settings):
        kept.append(event_at)
    return sorted(kept)


def settled(changes: list[str], at: str, settings: FleetSettings) -> bool:
    since = timing.shift(at, hours=-settings.observed_label_window_hours)
    return sum(1 for c in changes if since < c <= at) <= settings.observed_label_max_changes


def counts_toward_outages(conn: sa.Connection, terminal_id: str, at: str, settings: FleetSettings) -> bool:
    """False while the terminal's observed labels flap around event time `at`."""
    raw = conn.execute(sa.select(fleet_terminals.c.observed_changes).where(fleet_terminals.c.id == terminal_id)).scalar()
    return settled(json.loads(raw) if raw else [], at, settings)


def operator_of_many(conn: sa.Connection, terminal_ids: list[str]) -> dict[str, dict[str, str]]:
    o = operator_labels.c
    out: dict[str, dict[str, str]] = {}
    for r in conn.execute(sa.select(o.terminal_id, o.key, o.value).where(o.terminal_id.in_(terminal_ids))):
        out.setdefault(r.terminal_id, {})[r.key] = r.value
    return out


def apply(terminal_id: str, operator: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """The operator's labels after these changes (None or "": the key removed); at most
    wire.MAX_LABELS, as a terminal may send."""
    out = {k: v for k, v in operator.items() if k not in changes}
    out.update({k: v for k, v in changes.items() if v})
    if len(out) > wire.MAX_LABELS:
        raise LabelError(f"terminal {terminal_id} would have {len(out)} operator labels: at most {wire.MAX_LABELS}")
    return out


def write_operator(conn: sa.Connection, moves: dict[str, tuple[dict[str, str], dict[str, str]]], source: str, now: str) -> None:
    """Each terminal's operator labels from `before` to `after`: only the keys that differ
    are written, so a key's set_at and source say when and how its value was last set."""
    assert source in SOURCES
    o = operator_labels.c
    gone = [(t, k) for t, (before, after) in moves.items() for k in before if before[k] != after.get(k)]
    new = [{"terminal_id": t, "key": k, "value": v, "set_at": now, "source": source}
           for t, (before, after) in moves.items() for k, v in after.items() if before.get(k) != v]  # fmt: skip
    if gone:
        conn.execute(operator_labels.delete().where(sa.tuple_(o.terminal_id, o.key).in_(gone)))
    if new:
        conn.execute(operator_labels.insert(), new)


def stored(row: Any) -> tuple[dict[str, str], list[str]]:
    """A fleet_terminals row's claimed labels and observed-change times."""
    if row is None:
        return {}, []
    return json.loads(row["claimed_labels"] or "{}"), json.loads(row["observed_changes"] or "[]")


def ensure_row(conn: sa.Connection, terminal_id: str) -> None:
    """A fleet row for a terminal labelled before it was first seen."""
    conn.execute(sql.insert(conn, fleet_terminals).on_conflict_do_nothing(), {"id": terminal_id, "labels": "{}"})

