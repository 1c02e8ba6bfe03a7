"""How well diagnoses sent people: measures over the current outcomes of a window of visits
(docs/outcomes.md).

Per group (dispatch verdict, predicted top cause, code, model, firmware, or a label's value):
- visits: outcomes recorded (one per bundle, its latest visit);
- found_as_predicted: the visit found the bundle's top cause;
- found_in_top3: it found one of the bundle's first three causes;
- no_fault_found: it found nothing;
- below_verdict: it found a cause whose dispatch class is below the bundle's verdict (a
  technician sent on site for a paper roll): the dispatch was more than was needed;
- above_verdict: it found a cause whose class is above the verdict (a worn printer
  mechanism on a bundle that told the merchant to restart): the dispatch was too little;
- fixed_first_time: the bundle's first recorded visit fixed it.
Each count has its rate, the count over visits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.outcome_wire import NOTHING
from remote.server.fleet.schema import terminal_labels
from remote.server.outcomes.knowledge import VERDICT_RANKS, KnowledgeView
from remote.server.outcomes.schema import outcome_history, outcomes

DIMENSIONS = ("verdict", "cause", "code", "model", "firmware")  # and label.KEY
COUNTS = ("found_as_predicted", "found_in_top3", "no_fault_found", "below_verdict", "above_verdict", "fixed_first_time")


@dataclass(frozen=True)
class Window:
    since: str  # db stamps, visited_at in [since, until)
    until: str
    model: str | None = None
    firmware: str | None = None
    code: str | None = None
    verdict: str | None = None
    cause: str | None = None  # the predicted top cause
    labels: tuple[tuple[str, str], ...] = ()


def measure(engine: Engine, kb: KnowledgeView, window: Window, by: str | None = None) -> dict[str, Any]:
    """{"total": group, "groups": [group, ...]} with groups by `by` (a DIMENSION or label.KEY),
    most visits first; a group is {"key", "visits", COUNTS..., "<count>_rate"...}."""
    rows = _rows(engine, window)
    labels = _labels(engine, {r["terminal_id"] for r in rows}, by[6:]) if by and by.startswith("label.") else {}
    groups: dict[str | None, dict[str, Any]] = {}
    total = _group(None)
    for row in rows:
        counted = _counted(kb, row)
        _add(total, counted)
        if by:
            key = labels.get(row["terminal_id"]) if by.startswith("label.") else _key(row, by)
            _add(groups.setdefault(key, _group(key)), counted)
    ordered = sorted(groups.values(), key=lambda g: (-g["visits"], str(g["key"])))
    return {"since": window.since, "until": window.until, "by": by, "total": _rated(total), "groups": [_rated(g) for g in ordered]}


def _rows(engine: Engine, window: Window) -> list[dict[str, Any]]:
    first = (
        sa.select(outcome_history.c.bundle_id, sa.func.min(outcome_history.c.rank_key).label("rank_key"))
        .group_by(outcome_history.c.bundle_id)
        .subquery()
    )
    first_fixed = (
        sa.select(outcome_history.c.bundle_id, outcome_history.c.fixed)
        .join(first, sa.and_(first.c.bundle_id == outcome_history.c.bundle_id, first.c.rank_key == outcome_history.c.rank_key))
        .subquery()
    )
    query = (
        sa.select(outcomes, first_fixed.c.fixed.label("first_fixed"))
        .select_from(outcomes.outerjoin(first_fixed, first_fixed.c.bundle_id == outcomes.c.bundle_id))
        .where(outcomes.c.visited_at >= window.since, outcomes.c.visited_at < window.until)
    )
    for column, value in (("model", window.model), ("firmware", window.firmware), ("code", window.code), ("verdict", window.verdict)):
        if value is not None:
            query = query.where(outcomes.c[column] == value)
    for key, value in window.labels:
        labelled = sa.select(terminal_labels.c.terminal_id).where(terminal_labels.c.key == key, terminal_labels.c.value == value)
        query = query.where(outcomes.c.terminal_id.in_(labelled))
    with engine.connect() as conn:
        rows = [dict(r, predicted=json.loads(r["predicted"])) for r in conn.execute(query).mappings()]
    if window.cause is not None:
        rows = [r for r in rows if r["predicted"][:1] == [window.cause]]
    return rows


def _labels(engine: Engine, terminal_ids: set[str], key: str) -> dict[str, str]:
    query = sa.select(terminal_labels.c.terminal_id, terminal_labels.c.value).where(terminal_labels.c.key == key)
    with engine.connect() as conn:
        return {r.terminal_id: r.value for r in conn.execute(query) if r.terminal_id in terminal_ids}


def _key(row: dict[str, Any], by: str) -> str | None:
    if by == "cause":
        return row["predicted"][0] if row["predicted"] else None
    if by == "code":
        return f"{row['scheme']}:{row['code']}" if row["code"] else None
    return row[by]


def _counted(kb: KnowledgeView, row: dict[str, Any]) -> dict[str, bool]:
    found, predicted = row["found"], row["predicted"]
    needed = VERDICT_RANKS.get(kb.dispatch.get(found, ""), -1)
    sent = VERDICT_RANKS.get(row["verdict"] or "", -1)
    return {
        "found_as_predicted": predicted[:1] == [found],
        "found_in_top3": found in predicted[:3],
        "no_fault_found": found == NOTHING,
        "below_verdict": 0 <= needed < sent,
        "above_verdict": 0 <= sent < needed,
        "fixed_first_time": row["first_fixed"] is True,
    }


def _group(key: str | None) -> dict[str, Any]:
    return {"key": key, "visits": 0, **dict.fromkeys(COUNTS, 0)}


def _add(group: dict[str, Any], counted: dict[str, bool]) -> None:
    group["visits"] += 1
    for name, hit in counted.items():
        group[name] += hit


def _rated(group: dict[str, Any]) -> dict[str, Any]:
    visits = group["visits"]
    return dict(group, **{f"{name}_rate": round(group[name] / visits, 4) if visits else None for name in COUNTS})
