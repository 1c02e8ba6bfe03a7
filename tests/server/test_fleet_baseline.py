"""The outage detector's kept baseline: failing terminal-hours counted by whole hours equal
a count of each terminal's hours with a failure, those whose counted failure is held left
out (a terminal counts once per hour however many it sends); scope members' last sighting
moves in steps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from hypothesis import given, settings, strategies as st
from server_harness import default_settings

from remote.server import db
from remote.server.fleet import baseline, seasonal, timing
from remote.server.fleet.schema import (
    bundle_fleet,
    failure_hours,
    fleet_terminals,
    outage_events,
    scope_hours,
    scope_members,
    scope_seen_hours,
)

T0 = datetime(2026, 5, 1, tzinfo=UTC)
TABLES = [bundle_fleet, outage_events, failure_hours, scope_hours, scope_members, scope_seen_hours, fleet_terminals]


def at(minutes: float) -> str:
    return db.stamp(T0 + timedelta(minutes=minutes))


def store_failure(conn, n: int, terminal: str, minutes: float, scopes: list[str]) -> None:
    bid = f"b{n}"
    conn.execute(bundle_fleet.insert().values(bundle_id=bid, terminal_id=terminal, event_at=at(minutes), model="M", firmware="F", app_version="A"))
    conn.execute(outage_events.insert(), [{"bundle_id": bid, "scope_key": s, "terminal_id": terminal, "event_at": at(minutes)} for s in scopes])
    baseline.count_failure(conn, terminal, bid, scopes, at(minutes))


events = st.lists(
    st.tuples(st.sampled_from(["T", "U"]), st.floats(0, 600), st.sampled_from([["a=1"], ["a=1", "b=2"], ["b=2"]]), st.booleans()), max_size=60
)


@settings(max_examples=60, deadline=None)
@given(events, st.floats(-30, 600), st.floats(0, 700))
def test_unheld_failures_of_the_whole_hours_equal_a_count_of_each_one(spec, begin, length):
    engine = sa.create_engine("sqlite://")
    db.metadata.create_all(engine, tables=TABLES)
    with engine.begin() as conn:
        counted: dict[tuple[str, str], int] = {}  # (terminal, hour) -> the first failure's index
        for n, (terminal, minutes, scopes, _held) in enumerate(spec):
            store_failure(conn, n, terminal, minutes, scopes)
            counted.setdefault((terminal, at(minutes)[:13]), n)
        held = [f"b{n}" for n, (_t, _m, _s, h) in enumerate(spec) if h]
        conn.execute(bundle_fleet.update().where(bundle_fleet.c.bundle_id.in_(held)).values(hold_incident="I"))
        baseline.add_held(conn, held)
        first, after, hours = baseline.whole_hours(at(begin), at(begin + length))
        for scope in ("a=1", "b=2"):
            expected = sum(1 for (_t, h), n in counted.items() if scope in spec[n][2] and not spec[n][3] and first <= h < after)
            assert baseline.unheld_events(conn, scope, first, after) == expected
        if hours:  # every whole hour inside [begin, end], and no other
            start, stop = first + ":00:00.000000Z", after + ":00:00.000000Z"
            assert at(begin) <= start and stop <= at(begin + length) and hours == int(hours)
            assert timing.shift(start, hours=-1) < at(begin) and timing.shift(stop, hours=1) > at(begin + length)


def test_a_members_last_sighting_moves_in_steps_of_a_tenth_of_missing_after():
    fleet = dataclasses.replace(default_settings().fleet, missing_after_hours=20.0)  # steps of 2 h
    engine = sa.create_engine("sqlite://")
    db.metadata.create_all(engine, tables=TABLES)
    with engine.begin() as conn:
        conn.execute(scope_members.insert(), [{"scope_key": "a=1", "terminal_id": "T"}, {"scope_key": "a=1", "terminal_id": "U"}])
        seen = lambda: conn.execute(sa.select(scope_members.c.seen_at).where(scope_members.c.terminal_id == "T")).scalar()  # noqa: E731
        baseline.see(conn, "T", at(0), fleet)
        assert seen() == at(0)
        baseline.see(conn, "T", at(60), fleet)
        assert seen() == at(0)  # an hour newer: no write
        baseline.see(conn, "T", at(121), fleet)
        assert seen() == at(121)
        assert baseline.active(conn, "a=1", at(121), fleet) == 1  # U never seen
        assert baseline.active(conn, "a=1", at(121 + 20 * 60 + 1), fleet) == 1  # the window's first hour counts whole
        assert baseline.active(conn, "a=1", at(121 + 20 * 60 + 60), fleet) == 0


moves = st.lists(st.tuples(st.integers(0, 5), st.floats(0, 3000), st.booleans()), max_size=80)


@settings(max_examples=60, deadline=None)
@given(moves, st.floats(0, 3000))
def test_active_members_equal_a_count_of_the_members_seen_since(spec, at_minutes):
    """Sightings in any order, and terminals leaving their scopes (labels changed) and
    joining again: the kept counts give what counting the members gives."""
    fleet = dataclasses.replace(default_settings().fleet, missing_after_hours=20.0)
    engine = sa.create_engine("sqlite://")
    db.metadata.create_all(engine, tables=TABLES)
    with engine.begin() as conn:
        for terminal, minutes, relabel in spec:
            tid = f"T{terminal}"
            if relabel or not conn.execute(sa.select(scope_members.c.terminal_id).where(scope_members.c.terminal_id == tid)).first():
                baseline.leave(conn, tid)
                conn.execute(scope_members.delete().where(scope_members.c.terminal_id == tid))
                scopes = ["a=1", "b=2"] if terminal % 2 else ["a=1"]
                conn.execute(scope_members.insert(), [{"scope_key": k, "terminal_id": tid} for k in scopes])
            baseline.see(conn, tid, at(minutes), fleet)
        t = at(at_minutes)
        since = baseline.hour(db.stamp(db.parse_time(t) - timedelta(hours=20)))
        for scope in ("a=1", "b=2"):
            seen = conn.execute(sa.select(scope_members.c.seen_at).where(scope_members.c.scope_key == scope)).scalars().all()
            assert baseline.active(conn, scope, t, fleet) == sum(1 for x in seen if x and baseline.hour(x) >= since)
        assert conn.execute(sa.select(sa.func.count()).where(scope_seen_hours.c.members <= 0)).scalar() == 0


def test_one_terminal_back_dating_2000_failures_adds_one_terminal_hour():
    """2,000 failures one terminal dates into one minute raise its scopes' baseline by one
    terminal-hour, as one failure would; a second terminal's failure adds one more."""
    engine = sa.create_engine("sqlite://")
    db.metadata.create_all(engine, tables=TABLES)
    with engine.begin() as conn:
        for n in range(2000):
            store_failure(conn, n, "T", 30 + n / 2000, ["a=1", "b=2"])
        store_failure(conn, 2000, "U", 45, ["a=1"])
        first, after, _hours = baseline.whole_hours(at(0), at(120))
        assert baseline.unheld_events(conn, "a=1", first, after) == 2
        assert baseline.unheld_events(conn, "b=2", first, after) == 1


def test_a_diurnal_history_gives_busy_hours_their_own_higher_rate():
    """Seven days where every failure falls between 09:00 and 12:00 UTC: the shrunk rate at
    10:00 is several times the whole-day rate, at 03:00 far below it; a history with the same
    count every hour gives the whole-day rate at every hour."""
    hours = baseline.hour_keys("2026-05-04T00", "2026-05-11T00")
    assert len(hours) == 168
    busy = {k: 6 for k in hours if 9 <= int(k[11:13]) < 12}
    whole_day = sum(busy.values()) / (100 * 168)
    at_ten = seasonal.shrunk_rate(busy, hours, "2026-05-11T10", 100)
    at_three = seasonal.shrunk_rate(busy, hours, "2026-05-11T03", 100)
    assert at_ten > 5 * whole_day and at_three < whole_day / 5
    flat = {k: 2 for k in hours}
    assert all(abs(seasonal.shrunk_rate(flat, hours, f"2026-05-11T{h:02d}", 100) - 2 / 100) < 1e-12 for h in range(24))
    assert seasonal.shrunk_rate({}, [], "2026-05-11T10", 100) is None
