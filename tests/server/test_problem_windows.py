"""Problems over the last days: counting terminals by their newest day with each problem
gives what counting every day's hits gives, whatever order the bundles arrive in."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from hypothesis import given, settings, strategies as st

from remote.server import db
from remote.server.fleet import problems

FIRST = date(2026, 4, 1)
SIGNATURES = ["iso8583:96 | host.unreachable | -", "iso8583:51 | card.insufficient_funds | -"]

arrivals = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 20), st.sampled_from(SIGNATURES)), min_size=1, max_size=80)


@settings(max_examples=40, deadline=None)
@given(arrivals, st.integers(0, 21))
def test_the_last_days_equal_counting_every_hit(tmp_path_factory, spec, since_day):
    engine = db.make_engine(f"sqlite:///{tmp_path_factory.mktemp('p') / 'p.db'}")
    db.metadata.create_all(engine)
    with engine.begin() as conn:
        for terminal, day, text in spec:  # late uploads included: days come in any order
            at = f"{FIRST + timedelta(days=day)}T12:00:00.000000Z"
            index = {"terminal_id": f"T{terminal}", "model": "A920", "firmware": "1.0", "scheme": "iso8583",
                     "code": text[8:10], "top_cause": text.split(" | ")[1], "top_category": "host"}  # fmt: skip
            problems.add(conn, text, index, at, {})
    since = f"{FIRST + timedelta(days=since_day)}T00:00:00.000000Z"
    recent, _ = problems.list_problems(engine, since=since)
    counted, _ = problems.list_problems(engine, since=since, until="2999-01-01T00:00:00.000000Z")
    assert [(p["id"], p["terminals_affected"], p["bundles"]) for p in recent] == [(p["id"], p["terminals_affected"], p["bundles"]) for p in counted]
    expected = {problems.problem_id(t): len({n for n, d, s in spec if s == t and d >= since_day}) for t in SIGNATURES}
    assert {p["id"]: p["terminals_affected"] for p in recent} == {k: v for k, v in expected.items() if v}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM problem_last_days WHERE terminals <= 0")).scalar() == 0
