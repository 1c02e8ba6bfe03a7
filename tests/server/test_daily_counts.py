"""The per-day bundle counts behind the overview and /api/v1/stats: the pruned top-k equals
counting every bundle, removals take bundles out, and an older database is filled."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import sqlalchemy as sa
from hypothesis import given, settings, strategies as st

from remote.server import daily, db

FIRST = date(2026, 3, 1)


def bundle(terminal: int, day: int, code: str | None = "51") -> dict:
    return {
        "created_at": f"{FIRST + timedelta(days=day)}T10:00:00.000000Z", "terminal_id": f"T{terminal:03d}",
        "code": code, "top_cause": "card.insufficient_funds", "top_category": "card", "model": "A920",
        "firmware": "1.0", "verdict": "none",
    }  # fmt: skip


def expected_top(rows: list[dict], first: date, last: date, limit: int) -> list[dict]:
    counts = Counter(r["terminal_id"] for r in rows if first.isoformat() <= r["created_at"][:10] <= last.isoformat())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"key": k, "count": n} for k, n in ranked]


# Skewed like a fleet: a few terminals send most bundles, on most days.
terminals = st.one_of(st.integers(0, 3), st.integers(0, 60))
bundles = st.lists(st.tuples(terminals, st.integers(0, 20)), min_size=0, max_size=300)


@settings(max_examples=60, deadline=None)
@given(bundles, st.integers(1, 12), st.integers(0, 20), st.integers(1, 21), st.data())
def test_top_terminals_equal_a_count_of_every_bundle_before_and_after_removals(spec, limit, start, days, data):
    engine = sa.create_engine("sqlite://")
    db.metadata.create_all(engine, tables=[db.bundles, daily.bundle_days])
    rows = [bundle(t, d) for t, d in spec]
    first, last = FIRST + timedelta(days=start), FIRST + timedelta(days=start + days - 1)
    with engine.begin() as conn:
        daily.count(conn, rows)
        assert daily.top(conn, "terminal", first, last, limit) == expected_top(rows, first, last, limit)
        removed = data.draw(st.lists(st.sampled_from(range(len(rows))), unique=True)) if rows else []
        daily.count(conn, [rows[i] for i in removed], -1)
        left = [r for i, r in enumerate(rows) if i not in set(removed)]
        assert daily.top(conn, "terminal", first, last, limit) == expected_top(left, first, last, limit)
        assert conn.execute(sa.select(sa.func.count()).where(daily.bundle_days.c.count <= 0)).scalar() == 0


def test_a_null_column_is_counted_under_none_and_per_day_by_category():
    engine = sa.create_engine("sqlite://")
    db.metadata.create_all(engine, tables=[db.bundles, daily.bundle_days])
    with engine.begin() as conn:
        daily.count(conn, [bundle(1, 0, code=None), bundle(1, 0), bundle(2, 1)])
        assert daily.top(conn, "code", FIRST, FIRST + timedelta(days=1), 5) == [{"key": "51", "count": 2}, {"key": None, "count": 1}]
        assert daily.per_day(conn, FIRST, FIRST + timedelta(days=1)) == [
            {"day": "2026-03-01", "category": "card", "count": 2}, {"day": "2026-03-02", "category": "card", "count": 1},
        ]  # fmt: skip


def test_a_database_made_before_the_counts_gets_them_from_its_bundles(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    db.create_schema(engine)
    with engine.begin() as conn:
        daily.bundle_days.drop(conn)  # as an older release left it
        for i, row in enumerate([bundle(1, 0), bundle(1, 1), bundle(2, 1, code="96")]):
            conn.execute(db.bundles.insert().values(
                id=f"00000000-0000-4000-8000-00000000000{i}", serial="S", app_version="5", agent_version="1",
                trigger_kind="error", received_at=row["created_at"], sha256="0" * 64, size=1, **row,
            ))  # fmt: skip
    db.create_schema(engine)
    with engine.connect() as conn:
        assert daily.top(conn, "code", FIRST, FIRST + timedelta(days=1), 5) == [{"key": "51", "count": 2}, {"key": "96", "count": 1}]
        assert daily.top(conn, "terminal", FIRST, FIRST, 5) == [{"key": "T001", "count": 1}]
