"""Problems: bundles grouped by signature (Sentry's and Memfault's grouping, for payment
errors), with rollups kept as bundles arrive so that no page counts bundles."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from remote.server.db import bundles
from remote.server.fleet import sql, timing
from remote.server.fleet.schema import bundle_fleet, problem_counts, problem_hits, problem_last_days, problem_terminals, problems, terminal_labels

BREAKDOWN_TOP = 10  # values shown per model, firmware and label breakdown
UNSHOWN = ("day", "build")  # counted dimensions that are no breakdown
FIELDS = ("scheme", "code", "scheme_code", "top_cause", "top_category", "fail_findings", "model", "firmware", "app_version")


def fail_findings(probes: Any) -> list[str]:
    """Sorted ids of the fail findings in probes.json (a list, or {"probes": [...]})."""
    if isinstance(probes, dict):
        probes = probes.get("probes")
    found = set()
    for probe in probes if isinstance(probes, list) else []:
        for finding in probe.get("findings", []) if isinstance(probe, dict) and isinstance(probe.get("findings"), list) else []:
            if isinstance(finding, dict) and finding.get("severity") == "fail" and isinstance(finding.get("id"), str):
                found.add(finding["id"][:64])
    return sorted(found)


def signature(index: dict[str, Any], findings: list[str], fields: list[str]) -> str | None:
    """The signature text, or None for a bundle that reports no problem (no code, no cause)."""
    if not index.get("code") and not index.get("top_cause"):
        return None
    parts = {
        "scheme": index.get("scheme") or "",
        "code": index.get("code") or "",
        "scheme_code": f"{index.get('scheme') or ''}:{index.get('code') or ''}",
        "top_cause": index.get("top_cause") or "",
        "top_category": index.get("top_category") or "",
        "fail_findings": "+".join(findings),
        "model": index.get("model") or "",
        "firmware": index.get("firmware") or "",
        "app_version": index.get("app_version") or "",
    }
    return " | ".join(parts[f] or "-" for f in fields)


VERDICT_ORDER = ("none", "merchant", "remote", "onsite")  # a problem is a fault when its verdict is above none


def verdict_rank(verdict: str | None) -> int | None:
    return VERDICT_ORDER.index(verdict) if verdict in VERDICT_ORDER else None


def verdicts_of(kind: str, verdict: str | None) -> list[str] | None:
    """The verdicts a Problems view lists: one asked for, else those of faults (above none)
    or of business and issuer outcomes (none); None: all."""
    if verdict in VERDICT_ORDER:
        return [verdict]
    return {"faults": list(VERDICT_ORDER[1:]), "outcomes": [VERDICT_ORDER[0]]}.get(kind)


def fill_verdicts(conn: sa.Connection) -> None:
    """verdict_rank of every problem from its bundles (a database made before the column)."""
    b = bundles.c
    rank = sa.case(*((b.verdict == v, i) for i, v in enumerate(VERDICT_ORDER)), else_=-1)
    highest = (
        sa.select(sa.func.max(rank)).select_from(bundle_fleet.join(bundles, b.id == bundle_fleet.c.bundle_id))
        .where(bundle_fleet.c.problem_id == problems.c.id).scalar_subquery()
    )  # fmt: skip
    conn.execute(problems.update().values(verdict_rank=highest))


problems.c.verdict_rank.info["fill"] = fill_verdicts


def problem_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_h = problem_hits.c


@functools.lru_cache(maxsize=2)
def _hitting(dialect: str) -> Any:
    """One more bundle of a problem, terminal and day; the day's bundles after it (1: the
    first). One statement, not an insert-if-new and an update."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(problem_hits)
    return stmt.on_conflict_do_update(index_elements=["problem_id", "terminal_id", "day"], set_={"bundles": _h.bundles + 1}).returning(_h.bundles)


_OTHER_DAY = sa.select(sa.literal(1)).where(_h.problem_id == sa.bindparam("pid"), _h.terminal_id == sa.bindparam("tid"), _h.day != sa.bindparam("b_day")).limit(1)
_pc = problem_counts.c
_BREAKDOWN = sa.select(problems.c.breakdown).where(problems.c.id == sa.bindparam("pid"))
_TOP_VALUES = (
    sa.select(_pc.key, _pc.count).where(_pc.problem_id == sa.bindparam("pid"), _pc.dim == sa.bindparam("dim"))
    .order_by(_pc.count.desc(), _pc.key).limit(BREAKDOWN_TOP)
)  # fmt: skip
_SET_BREAKDOWN = problems.update().where(problems.c.id == sa.bindparam("pid")).values(breakdown=sa.bindparam("b_breakdown"))
# (the statements above are built once: every bundle counted runs them)


def add(
    conn: sa.Connection, text: str, index: dict[str, Any], event_at: str, labels: dict[str, str], pending: Pending | None = None,
) -> str:  # fmt: skip
    """Count one new bundle into its problem's rollups; the problem id. `pending`: the rows
    every terminal's bundles of the problem share (the problem, its counts by dimension, its
    terminals' last days, its breakdown) are summed there and written by Pending.write,
    once for all bundles a transaction counts (else written now). The rows of one problem
    and terminal are written now either way (later bundles of the terminal read them)."""
    now = pending is None
    pending = pending or Pending()
    pid = problem_id(text)
    terminal, day = index["terminal_id"], timing.day(event_at)
    bundles = conn.execute(
        _hitting(conn.dialect.name),
        {"problem_id": pid, "terminal_id": terminal, "day": day, "model": index["model"], "firmware": index["firmware"], "bundles": 1},
    ).scalar_one()  # fmt: skip
    new_terminal = bundles == 1  # the terminal's first bundle of the problem that day
    hit = {"pid": pid, "tid": terminal, "b_day": day}
    if new_terminal:  # a new day for this problem and terminal: it may be its newest
        _newest_day(conn, pid, terminal, day, pending)
    first_for_terminal = bool(new_terminal) and not conn.execute(_OTHER_DAY, hit).first()
    pending.problem({
        "id": pid, "signature": text, "scheme": index.get("scheme"), "code": index.get("code"),
        "top_cause": index.get("top_cause"), "top_category": index.get("top_category"),
        "first_seen": event_at, "last_seen": event_at, "bundles": 1, "terminals_affected": int(first_for_terminal),
        "verdict_rank": verdict_rank(index.get("verdict")),
    })  # fmt: skip
    counts = [("build", build_key(index["model"], index["firmware"])), ("day", day), ("firmware", index["firmware"])]
    counts += sorted((f"label:{k}", v) for k, v in labels.items()) + [("model", index["model"])]
    for dim, key in counts:
        pending.counts[(pid, dim, key[:200])] += Counter(count=1, terminals=int(bool(new_terminal) if dim == "day" else first_for_terminal))
    pending.breakdowns.setdefault(pid, set()).update(dim for dim, _ in counts if dim not in UNSHOWN)
    if now:
        pending.write(conn)
    return pid


@dataclass
class Pending:
    """What several bundles add to the rows of their problems that every terminal's bundles
    share, summed, to be written at once (Pending.write): a chunk of the fleet queue takes
    these rows' locks only at its end, for its commit, and in one order (by key), so
    counting in several threads neither waits long nor deadlocks on them. The rows left are
    those counting one bundle after another would leave."""

    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: defaultdict[tuple[str, str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    last_days: Counter[tuple[str, str]] = field(default_factory=Counter)
    breakdowns: dict[str, set[str]] = field(default_factory=dict)

    def problem(self, row: dict[str, Any]) -> None:
        """One bundle's row of `problems`: the first of a problem as it would be inserted,
        the later ones summed into it as the upsert would (least, greatest, +)."""
        have = self.problems.get(row["id"])
        if have is None:
            self.problems[row["id"]] = row
            return
        have["bundles"] += row["bundles"]
        have["terminals_affected"] += row["terminals_affected"]
        have["first_seen"] = min(have["first_seen"], row["first_seen"])
        have["last_seen"] = max(have["last_seen"], row["last_seen"])
        have["verdict_rank"] = max(-1 if have["verdict_rank"] is None else have["verdict_rank"], -1 if row["verdict_rank"] is None else row["verdict_rank"])

    def write(self, conn: sa.Connection) -> None:
        if self.problems:
            conn.execute(_adding_problems(conn), [self.problems[pid] for pid in sorted(self.problems)])
        sql.add_counts(
            conn, problem_counts, ["problem_id", "dim", "key"],
            [{"problem_id": pid, "dim": dim, "key": key, "count": n["count"], "terminals": n["terminals"]}
             for (pid, dim, key), n in sorted(self.counts.items())],
            "count", "terminals",
        )  # fmt: skip
        moves = [{"problem_id": pid, "day": day, "terminals": n} for (pid, day), n in sorted(self.last_days.items()) if n]
        sql.move_counts(conn, problem_last_days, ["problem_id", "day"], moves, "terminals")
        for pid in sorted(self.breakdowns):
            _refresh_breakdown(conn, pid, sorted(self.breakdowns[pid]))
        self.problems, self.counts, self.last_days, self.breakdowns = {}, defaultdict(Counter), Counter(), {}


_ADDING_PROBLEMS: dict[str, Any] = {}


def _adding_problems(conn: sa.Connection) -> Any:
    """The upsert of `problems` rows (Pending.write), built once per dialect."""
    found = _ADDING_PROBLEMS.get(conn.dialect.name)
    if found is None:
        stmt = sql.insert(conn, problems)
        found = _ADDING_PROBLEMS[conn.dialect.name] = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "bundles": problems.c.bundles + stmt.excluded.bundles,
                "terminals_affected": problems.c.terminals_affected + stmt.excluded.terminals_affected,
                "first_seen": sql.least(conn, problems.c.first_seen, stmt.excluded.first_seen),
                "last_seen": sql.greatest(conn, problems.c.last_seen, stmt.excluded.last_seen),
                "verdict_rank": sql.greatest(conn, sa.func.coalesce(problems.c.verdict_rank, -1), sa.func.coalesce(stmt.excluded.verdict_rank, -1)),
            },
        )  # fmt: skip
    return found


def build_key(model: str, firmware: str) -> str:
    return f"{model}\n{firmware}"


def rebuild_counts(conn: sa.Connection) -> None:
    """Count problem_counts, problem_terminals and the breakdowns again from problem_hits,
    labels as the terminals carry them now (a database from before a count existed, or
    loaded in bulk)."""
    rebuild_terminals(conn)
    h, pc = problem_hits.c, problem_counts.c
    conn.execute(problem_counts.delete())
    cols = ["problem_id", "dim", "key", "count", "terminals"]
    terminals = sa.func.count(sa.distinct(h.terminal_id))
    for dim, key in (("model", h.model), ("firmware", h.firmware), ("day", h.day)):
        conn.execute(problem_counts.insert().from_select(
            cols, sa.select(h.problem_id, sa.literal(dim), key, sa.func.sum(h.bundles), terminals).group_by(h.problem_id, key)
        ))  # fmt: skip
    build = h.model + "\n" + h.firmware
    conn.execute(problem_counts.insert().from_select(
        cols, sa.select(h.problem_id, sa.literal("build"), build, sa.func.sum(h.bundles), terminals).group_by(h.problem_id, h.model, h.firmware)
    ))  # fmt: skip
    lab = terminal_labels.c
    conn.execute(problem_counts.insert().from_select(
        cols,
        sa.select(h.problem_id, sa.literal("label:") + lab.key, lab.value, sa.func.sum(h.bundles), terminals)
        .select_from(problem_hits.join(terminal_labels, lab.terminal_id == h.terminal_id))
        .group_by(h.problem_id, lab.key, lab.value),
    ))  # fmt: skip
    dims = {}
    for pid, dim in conn.execute(sa.select(pc.problem_id, pc.dim).distinct()):
        if dim not in UNSHOWN:
            dims.setdefault(pid, []).append(dim)
    for pid, names in dims.items():
        _refresh_breakdown(conn, pid, sorted(names))


def _newest_day(conn: sa.Connection, pid: str, terminal: str, day: str, pending: Pending) -> None:
    """Move the terminal, in problem_last_days, to `day` if that is its newest with the problem."""
    pt = problem_terminals.c
    if sql.insert_new(conn, problem_terminals, ["problem_id", "terminal_id"], [{"problem_id": pid, "terminal_id": terminal, "last_day": day}]):
        moves = [(day, 1)]
    else:  # locked: of two arrivals of one terminal, the second sees the first's day
        before = conn.execute(sa.select(pt.last_day).where(pt.problem_id == pid, pt.terminal_id == terminal).with_for_update()).scalar_one()
        if day <= before:
            return
        conn.execute(problem_terminals.update().where(pt.problem_id == pid, pt.terminal_id == terminal).values(last_day=day))
        moves = [(before, -1), (day, 1)]
    for d, n in moves:
        pending.last_days[(pid, d)] += n


def rebuild_terminals(conn: sa.Connection) -> None:
    h, pt = problem_hits.c, problem_terminals.c
    conn.execute(problem_terminals.delete())
    conn.execute(problem_terminals.insert().from_select(
        ["problem_id", "terminal_id", "last_day"], sa.select(h.problem_id, h.terminal_id, sa.func.max(h.day)).group_by(h.problem_id, h.terminal_id)
    ))  # fmt: skip
    conn.execute(problem_last_days.delete())
    conn.execute(problem_last_days.insert().from_select(
        ["problem_id", "day", "terminals"], sa.select(pt.problem_id, pt.last_day, sa.func.count()).group_by(pt.problem_id, pt.last_day)
    ))  # fmt: skip


@sa.event.listens_for(problem_terminals.metadata, "after_create")
def _fill_new_tables(_metadata: sa.MetaData, conn: sa.Connection, tables: list[sa.Table] = (), **_kw: Any) -> None:
    """Once every table exists: either of the two made on an older database fills both."""
    if problem_terminals in tables or problem_last_days in tables:
        rebuild_terminals(conn)


problem_counts.c.terminals.info["fill"] = rebuild_counts


def _refresh_breakdown(conn: sa.Connection, pid: str, dims: list[str]) -> None:
    """Keep the top values of the dimensions this bundle touched in problems.breakdown, so
    that a page of problems reads no per-value counts (a label such as merchant has
    thousands of values). Two servers racing may leave one dimension a bundle stale; the
    next bundle of that problem and dimension puts it right."""
    stored = conn.execute(_BREAKDOWN, {"pid": pid}).scalar()
    breakdown = json.loads(stored) if stored else {}
    for dim in dims:
        rows = conn.execute(_TOP_VALUES, {"pid": pid, "dim": dim}).all()
        breakdown[dim] = [[r.key, r.count] for r in rows]
    conn.execute(_SET_BREAKDOWN, {"pid": pid, "b_breakdown": json.dumps(breakdown, sort_keys=True)})


def _cursor(terminals: int, pid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([terminals, pid]).encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> tuple[int, str]:
    try:
        terminals, pid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(terminals, int) or not isinstance(pid, str):
            raise TypeError
    except (ValueError, TypeError, UnicodeError):
        raise ValueError("cursor is not one this server issued") from None
    return terminals, pid


def list_problems(
    engine: Engine, *, since: str | None = None, until: str | None = None, labels: dict[str, str] | None = None,
    model: str | None = None, firmware: str | None = None, limit: int = 50, cursor: str | None = None,
    first_seen_since: str | None = None, verdicts: list[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    """Ranked by terminals affected. Unfiltered: straight from `problems`; by one label,
    model, firmware or model and firmware, over all time: from that value's count; since
    alone: from the terminals counted by their newest day with each problem; any other filter: from the per
    problem, terminal and day rollup (since/until are whole UTC days). first_seen_since:
    only the problems first seen then or later (new ones), the other filters left aside;
    verdicts: only the problems whose highest verdict is one of these."""
    labels = labels or {}
    if first_seen_since:
        since = until = model = firmware = None
        labels = {}
    one = _one_count(labels, model, firmware) if not (since or until) else None
    recent = since and not (until or labels or model or firmware)
    if recent:  # the last days, up to now: a terminal counts if its newest day is in them
        ld, pc = problem_last_days.c, problem_counts.c
        terms = sa.select(ld.problem_id, sa.func.sum(ld.terminals).label("n")).where(ld.day >= since[:10]).group_by(ld.problem_id).subquery()
        sums = sa.select(pc.problem_id, sa.func.sum(pc.count).label("n")).where(pc.dim == "day", pc.key >= since[:10]).group_by(pc.problem_id).subquery()
        query = sa.select(terms.c.problem_id.label("id"), terms.c.n.label("terminals"), sums.c.n.label("bundles")).join(sums, sums.c.problem_id == terms.c.problem_id)
        rank_t, rank_id = terms.c.n, terms.c.problem_id
    elif one is not None:
        pc = problem_counts.c
        query = sa.select(pc.problem_id.label("id"), pc.terminals, pc.count.label("bundles")).where(pc.dim == one[0], pc.key == one[1])
        rank_t, rank_id = pc.terminals, pc.problem_id
    elif since or until or labels or model or firmware:
        hits = problem_hits.c
        where = []
        if since:
            where.append(hits.day >= since[:10])
        if until:
            where.append(hits.day <= until[:10])
        if model:
            where.append(hits.model == model)
        if firmware:
            where.append(hits.firmware == firmware)
        for key, value in labels.items():
            where.append(hits.terminal_id.in_(sa.select(terminal_labels.c.terminal_id).where(terminal_labels.c.key == key, terminal_labels.c.value == value)))
        terms = sa.func.count(sa.distinct(hits.terminal_id)).label("terminals")
        agg = sa.select(hits.problem_id.label("id"), terms, sa.func.sum(hits.bundles).label("bundles")).where(*where).group_by(hits.problem_id).subquery()
        query = sa.select(agg.c.id, agg.c.terminals, agg.c.bundles)
        rank_t, rank_id = agg.c.terminals, agg.c.id
    else:
        query = sa.select(problems.c.id, problems.c.terminals_affected.label("terminals"), problems.c.bundles)
        rank_t, rank_id = problems.c.terminals_affected, problems.c.id
        if first_seen_since:
            query = query.where(problems.c.first_seen >= first_seen_since)
    if verdicts is not None:
        ranks = [VERDICT_ORDER.index(v) for v in verdicts if v in VERDICT_ORDER]
        query = query.where(rank_id.in_(sa.select(problems.c.id).where(problems.c.verdict_rank.in_(ranks))))
    if cursor:
        after_t, after_id = _uncursor(cursor)
        query = query.where(sa.or_(rank_t < after_t, sa.and_(rank_t == after_t, rank_id > after_id)))
    query = query.order_by(rank_t.desc(), rank_id).limit(limit + 1)
    with engine.connect() as conn:
        ranked = conn.execute(query).all()
        more = len(ranked) > limit
        ranked = ranked[:limit]
        items = _items(conn, ranked, since, until)
    return items, _cursor(ranked[-1].terminals, ranked[-1].id) if more and ranked else None


def _one_count(labels: dict[str, str], model: str | None, firmware: str | None) -> tuple[str, str] | None:
    """The problem_counts (dim, key) that answers this filter alone, if one does."""
    if labels:
        return (f"label:{next(iter(labels))}", next(iter(labels.values()))) if len(labels) == 1 and not (model or firmware) else None
    if model and firmware:
        return "build", build_key(model, firmware)
    return ("model", model) if model else ("firmware", firmware) if firmware else None


def _items(conn: sa.Connection, ranked: list[Any], since: str | None, until: str | None) -> list[dict[str, Any]]:
    ids = [r.id for r in ranked]
    if not ids:
        return []
    rows = {r["id"]: r for r in conn.execute(sa.select(problems).where(problems.c.id.in_(ids))).mappings()}
    pc = problem_counts.c
    days = sa.select(pc.problem_id, pc.key, pc.count).where(pc.problem_id.in_(ids), pc.dim == "day")
    if since:
        days = days.where(pc.key >= since[:10])
    if until:
        days = days.where(pc.key <= until[:10])
    counts: dict[str, dict[str, list[tuple[str, int]]]] = {
        pid: {dim: [tuple(pair) for pair in pairs] for dim, pairs in json.loads(rows[pid]["breakdown"] or "{}").items()} for pid in ids
    }
    for r in conn.execute(days):
        counts[r.problem_id].setdefault("day", []).append((r.key, r.count))
    out = []
    for r in ranked:
        p, c = rows[r.id], counts[r.id]
        by_label = {dim.removeprefix("label:"): _ranked(pairs) for dim, pairs in c.items() if dim.startswith("label:")}
        days = sorted(c.get("day", []))
        out.append({
            "id": p["id"], "signature": p["signature"], "code": p["code"], "scheme": p["scheme"], "top_cause": p["top_cause"],
            "first_seen": p["first_seen"], "last_seen": p["last_seen"], "bundles": int(r.bundles),
            "top_category": p["top_category"], "verdict": _verdict_of(p["verdict_rank"]),
            "terminals_affected": int(r.terminals),
            "by_model": _ranked(c.get("model", [])), "by_firmware": _ranked(c.get("firmware", [])),
            "by_label": dict(sorted(by_label.items())),
            "daily": [{"key": d, "count": n} for d, n in days],
        })  # fmt: skip
    return out


def _verdict_of(rank: int | None) -> str | None:
    return VERDICT_ORDER[rank] if rank is not None and 0 <= rank < len(VERDICT_ORDER) else None


def _ranked(pairs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"key": k, "count": n} for k, n in sorted(pairs, key=lambda x: (-x[1], x[0]))]


def get_problem(engine: Engine, pid: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(problems.c.id, problems.c.terminals_affected.label("terminals"), problems.c.bundles).where(problems.c.id == pid)).first()
        return _items(conn, [row], None, None)[0] if row else None
