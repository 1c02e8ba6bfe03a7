"""The outage detector against what a hostile or noisy fleet does (issues 20 and 21), driven
through Fleet's arrival calls on SQLite and PostgreSQL: bounded evidence per terminal,
business outcomes left out, breadth, the hold floor, acknowledgement and dismissal, and a
re-scoped outage's figures and holds."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from server_harness import default_settings, fresh_pg_database

from remote.server import db
from remote.server.fleet import baseline, breadth, incidents, inventory, outage, signal
from remote.server.fleet.engine import Fleet
from remote.server.fleet.schema import (
    bundle_fleet,
    fleet_terminals,
    incidents as incidents_t,
    operator_labels,
    outage_events,
    scope_hours,
    scope_members,
    terminal_days,
    terminal_labels,
)
from remote.server.outcomes import knowledge

T = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)  # the test's "now" in event time; the fleet began two days before


def at(minutes: float) -> str:
    return db.stamp(T + timedelta(minutes=minutes))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    with contextlib.ExitStack() as stack:
        yield f"sqlite:///{tmp_path / 'f.db'}" if request.param == "sqlite" else stack.enter_context(fresh_pg_database())


class Fleetlet:
    """A fleet whose terminals all belong to acquirer B (merchants m0..m9 in turn) unless
    told otherwise, each seen 40 hours and 2 hours before T (or `now`)."""

    def __init__(self, url: str, now: datetime = T, **fleet: object) -> None:
        self.now = now
        settings = default_settings()
        self.settings = dataclasses.replace(settings, fleet=dataclasses.replace(settings.fleet, **fleet))
        self.engine = db.make_engine(url)
        db.create_schema(self.engine)
        self.fleet = Fleet(self.engine, self.settings)
        self.labels: dict[str, dict[str, str]] = {}

    def enrol(self, count: int, prefix: str = "T", first_seen: float = -40 * 60, **labels: str) -> list[str]:
        """Terminals first seen at `first_seen` and last 2 hours before T, written in bulk as
        bench/fleet.py loads a fleet (the rollups the detector reads counted again after)."""
        at = self.at
        ids = [f"{prefix}{len(self.labels) + i:04d}" for i in range(count)]
        for i, tid in enumerate(ids):
            self.labels[tid] = {"acquirer": "B", "merchant": f"m{i % 10}", "region": ("north", "south")[i % 2], **labels}
        last = at(-120)
        with db.writing(self.engine) as conn:
            conn.execute(fleet_terminals.insert(), [
                {"id": t, "model": "A920", "firmware": "1.0", "app_version": "5.0", "agent_version": "0.2.0",
                 "labels": json.dumps(self.labels[t]), "last_seen_at": last, "last_heartbeat_at": last, "first_seen_at": at(first_seen)}
                for t in ids
            ])  # fmt: skip
            conn.execute(terminal_labels.insert(), [{"terminal_id": t, "key": k, "value": v} for t in ids for k, v in self.labels[t].items()])
            conn.execute(operator_labels.insert(), [  # the operator's, as an import leaves them: what scopes are cut by
                {"terminal_id": t, "key": k, "value": v, "set_at": last, "source": "import"}
                for t in ids for k, v in self.labels[t].items() if k not in self.settings.fleet.observed_label_keys
            ])  # fmt: skip
            members = [{"scope_key": k, "terminal_id": t, "seen_at": last} for t in ids for k in inventory.scopes_of(self.labels[t], self.settings.fleet)]
            conn.execute(scope_members.insert(), members)
            days = {(t, at(m)[:10]) for t in ids for m in (first_seen, -120)}
            conn.execute(terminal_days.insert(), [{"terminal_id": t, "day": d, "model": "A920", "firmware": "1.0", "app_version": "5.0"} for t, d in days])
            baseline.rebuild_seen_hours(conn)
        return ids

    def at(self, minutes: float) -> str:
        return db.stamp(self.now + timedelta(minutes=minutes))

    def fail(self, tid: str, minutes: float, category: str = "host", code: str = "", cause: str | None = None) -> str:
        """A bundle (with no code or cause by default: the problem rollups are not what is tested)."""
        at = self.at
        bundle_id = str(uuid.uuid4())
        record = {
            "id": bundle_id, "terminal_id": tid, "created_at": at(minutes), "received_at": at(max(minutes, 0)),
            "model": "A920", "firmware": "1.0", "app_version": "5.0", "agent_version": "0.2.0",
            "scheme": "iso8583", "code": code or None, "top_cause": cause, "top_category": category,
        }  # fmt: skip
        bundle = SimpleNamespace(manifest_raw={"terminal": {"labels": self.labels[tid]}}, scan=SimpleNamespace(kept={}))
        self.fleet.on_bundle(bundle, record, False)
        return bundle_id

    def outages(self) -> list[dict]:
        return [i for i in incidents.list_incidents(self.engine) if i["kind"] == "outage"]

    def held(self, bundle_ids: list[str] | None = None) -> set[str]:
        b = bundle_fleet.c
        query = sa.select(b.bundle_id).where(b.hold_incident.is_not(None))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars()) & set(bundle_ids if bundle_ids is not None else conn.execute(sa.select(b.bundle_id)).scalars())


def test_one_terminal_back_dating_failures_does_not_raise_the_baseline(db_url):
    """300 host failures one terminal back-dates into a minute count as one terminal-hour;
    five established terminals of other merchants failing afterwards still open the
    acquirer's outage (on main the baseline rose 300-fold and five were not enough; 2,000
    of them, at the baseline's own level: test_fleet_baseline.py)."""
    f = Fleetlet(db_url)
    attacker, *others = f.enrol(100)
    for n in range(300):
        f.fail(attacker, -300 + n / 300)
    with f.engine.connect() as conn:
        counted = conn.execute(sa.select(sa.func.sum(scope_hours.c.events)).where(scope_hours.c.scope_key == "acquirer=B")).scalar()
    assert counted == 1
    for n, tid in enumerate(others[:5]):
        f.fail(tid, n)
    assert [o["scope"] for o in f.outages()] == [{"acquirer": "B"}]


@pytest.mark.parametrize("size", [100, 1000])
def test_a_few_hostile_terminals_never_make_a_hold(db_url, size):
    """Seven established terminals claiming acquirer B, over seven merchants, send a host
    failure every 10 minutes for an hour and a half: a real broken terminal of B is never held.
    A quarter of B failing at once is held (at 100: the floor lets real outages hold)."""
    f = Fleetlet(db_url)
    terminals = f.enrol(size)
    hostile, honest = terminals[:7], terminals[7:]
    sent = [f.fail(tid, minutes + i) for minutes in range(0, 90, 10) for i, tid in enumerate(hostile)]
    sent.append(f.fail(honest[0], 45))
    assert not f.held(sent)
    if size == 100:
        real = [f.fail(tid, 120 + (i % 9)) for i, tid in enumerate(honest[:25])]
        assert f.held(real) == set(real)


def test_new_terminals_and_one_merchant_open_no_outage(db_url):
    """Terminals first seen two hours ago, or all of one merchant, open nothing."""
    f = Fleetlet(db_url)
    f.enrol(60)
    fresh = f.enrol(8, prefix="N", first_seen=-180)
    for i, tid in enumerate(fresh):
        f.fail(tid, i)
    one_shop = f.enrol(8, prefix="S", merchant="m3")
    for i, tid in enumerate(one_shop):
        f.fail(tid, 60 + i)
    assert f.outages() == []


def test_a_fleet_first_seen_just_before_new_year_has_founding_terminals_and_young_history(db_url):
    """A fleet first seen at 23:50 UTC on 31 December, whose shops open at 08:00 on 1 January:
    the shops are founding terminals (first seen within a day of the fleet's first sighting,
    not of its first UTC day's midnight), so an outage at noon opens, and the baseline's
    history is the 12 hours there are (young), not 36 (counted from 31 December 00:00, the
    shops were new for a day and no outage opened: the clock run at the year's end)."""
    noon = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    f = Fleetlet(db_url, now=noon)
    f.enrol(1, prefix="E", first_seen=-(12 * 60 + 10))  # 2026-12-31 23:50
    shops = f.enrol(40, first_seen=-240)  # 2027-01-01 08:00
    with f.engine.connect() as conn:
        base = outage.ScopeCounts(conn, "acquirer=B", f.at(0), f.at(-10), f.settings.fleet)
        assert base.young and len(base.history[1]) == 11  # the whole hours 00:00-11:00 of 1 January
    for i, tid in enumerate(shops[:8]):
        f.fail(tid, i / 2)
    assert [o["scope"] for o in f.outages()] == [{"acquirer": "B"}]


def test_business_outcomes_feed_no_detector(db_url):
    """Declines (card, transaction), a decline code under a host cause, a cause that
    dispatches none: none reaches the outage events or the regression counts; a printer
    fault under an approval code still does."""
    f = Fleetlet(db_url)
    tids = f.enrol(12)
    kept = {
        f.fail(tids[0], 1, "card", "51", "card.insufficient_funds"): "category:card",
        f.fail(tids[1], 1, "transaction", "61", "transaction.limit"): "category:transaction",
        f.fail(tids[2], 1, "host", "51", "host.unreachable"): "code:iso8583:51",
        f.fail(tids[3], 1, "host", "", "host.cutoff"): "cause:host.cutoff",
        f.fail(tids[4], 1, "printer", "00", "printer.paper_out"): None,
        f.fail(tids[5], 1, "host", "96", "host.unreachable"): None,
    }
    with f.engine.connect() as conn:
        got = dict(conn.execute(sa.select(bundle_fleet.c.bundle_id, bundle_fleet.c.excluded)).all())
        events = set(conn.execute(sa.select(outage_events.c.bundle_id)).scalars())
    assert got == kept
    assert events == {list(kept)[5]}  # the one host failure that is no business outcome


def test_an_operator_may_count_a_category():
    view = knowledge.load(())
    fleet = default_settings().fleet
    decline = {"top_category": "card", "top_cause": "card.insufficient_funds", "scheme": "iso8583", "code": "51"}
    assert signal.excluded(decline, view, fleet) == "category:card"
    assert signal.excluded(decline, view, dataclasses.replace(fleet, counted_categories=["card"])) is None


def test_a_large_hold_waits_for_acknowledgement_and_a_dismissed_outage_lets_go(db_url):
    f = Fleetlet(db_url, outage_hold_max_bundles=10)
    tids = f.enrol(40)
    first = [f.fail(tid, i % 8) for i, tid in enumerate(tids[:20])]
    (outage,) = f.outages()
    assert len(f.held(first)) == 10  # the rest waits for a person
    with db.writing(f.engine) as conn:
        conn.execute(incidents_t.update().where(incidents_t.c.id == outage["id"]).values(acknowledged_at=at(9), acknowledged_by="lead"))
    more = [f.fail(tid, 9) for tid in tids[20:24]]
    assert f.held(first + more) == set(first + more)

    with db.writing(f.engine) as conn:
        assert incidents.dismiss(conn, outage["id"])
    assert not f.held() and incidents.get_incident(f.engine, outage["id"])["status"] == "dismissed"
    again = [f.fail(tid, 12 + i % 5) for i, tid in enumerate(tids[:24])]  # the same terminals: no new outage
    assert [o["status"] for o in f.outages()] == ["dismissed"] and not f.held(again)


def test_a_rescoped_outage_recomputes_its_figures_and_holds(db_url):
    """Without the wide-scope rule and the hold floor an acquirer's first failures open and
    hold link=cellular (as on main); when acquirer B's wifi terminals fail too the outage is re-scoped in place:
    terminals_in_scope is B's 20, not cellular's 196, and the other acquirer's cellular
    terminal it held is let go."""
    f = Fleetlet(db_url, outage_wide_scopes=[], outage_hold_min_share=0.0)
    b_cell = f.enrol(16, link="cellular")
    b_wifi = f.enrol(4, link="wifi")
    c_cell = f.enrol(180, prefix="C", acquirer="C", link="cellular")
    early = [f.fail(tid, i) for i, tid in enumerate(b_cell[:4])] + [f.fail(c_cell[0], 4)]
    (outage,) = f.outages()
    assert outage["scope"] == {"link": "cellular"} and f.held(early) == set(early)
    late = [f.fail(tid, 5 + i) for i, tid in enumerate(b_wifi + b_cell[4:8])]
    (outage,) = f.outages()
    assert outage["scope"] == {"acquirer": "B"} and outage["terminals_in_scope"] == 20
    assert f.held(early + late) == set(early[:4] + late)
    assert outage["terminals_affected"] == 12 and "12 of 20" in outage["summary"]["en"]


def test_a_late_carrier_outage_first_opened_by_one_acquirer_ends_as_the_carrier(db_url):
    """A carrier's outage whose bundles all arrive after the fleet's newest event time has
    moved on (a link outage: sent when the link is back): its first late uploads, all of
    acquirer A (half of A), open acquirer A's outage, closed at once; the rest, of acquirer B,
    re-scope that closed outage to the carrier, all of which fails (on main a second outage
    opened beside it, and A's stayed)."""
    f = Fleetlet(db_url)
    a_x = f.enrol(10, prefix="A", acquirer="A", carrier="X", link="cellular")
    f.enrol(10, prefix="AY", acquirer="A", carrier="Y", link="cellular")
    b_x = f.enrol(10, prefix="B", acquirer="B", carrier="X", link="cellular")
    f.enrol(30, prefix="Y", carrier="Y", link="cellular")
    f.fail(b_x[-1], 120, "printer")  # the fleet's newest event time, two hours on
    for i, tid in enumerate(a_x + b_x):
        f.fail(tid, i)
    assert [(o["scope"], o["status"]) for o in f.outages()] == [({"carrier": "X"}, "closed")]


def test_of_two_scopes_holding_each_others_failures_the_better_fit_wins(db_url):
    """Acquirer B's 14 terminals, 12 of them in the north: its north fails first (B&north
    opens), then its south too. B's 13 failing of 14 explain all 13 where B&north's 11 of 12
    leave two out: the outage ends as acquirer B (fewer terminals used to keep B&north)."""
    f = Fleetlet(db_url)
    north = f.enrol(12, region="north")
    south = f.enrol(2, region="south")
    f.enrol(20, prefix="C", acquirer="C", region="north")
    for i, tid in enumerate(north[:11] + south):
        f.fail(tid, i / 2)
    assert [o["scope"] for o in f.outages()] == [{"acquirer": "B"}]


def test_an_acquirers_outage_explains_its_cellular_terminals_before_link_cellular_is_tested(db_url):
    """Acquirer A's host outage (12 failing, half of them on cellular) and, in the same
    minutes, five of acquirer B's cellular terminals: together they looked like `link=cellular`
    spread over two acquirers and two carriers, which opened with B's five (as on main).
    A's outage explains A's terminals first; what is left is B's alone: acquirer B opens."""
    f = Fleetlet(db_url)
    a_cell = f.enrol(15, prefix="A", acquirer="A", carrier="Y", link="cellular")
    a_wifi = f.enrol(15, prefix="W", acquirer="A", link="wifi")
    b_cell = f.enrol(20, prefix="B", acquirer="B", carrier="X", link="cellular")
    for i, tid in enumerate(a_cell[:6] + a_wifi[:6]):
        f.fail(tid, i / 2)
    for i, tid in enumerate(b_cell[:5]):
        f.fail(tid, 6 + i / 2)
    assert sorted(o["scope"]["acquirer"] for o in f.outages() if "acquirer" in o["scope"]) == ["A", "B"]
    assert not [o for o in f.outages() if "link" in o["scope"] or "carrier" in o["scope"]]


def test_an_acquirer_failing_whole_on_cellular_is_not_widened_by_failures_beside_it(db_url):
    """Acquirer A's ten terminals, all on cellular, all fail (a certificate expiry); five of
    acquirer B's forty cellular terminals fail in the next minutes. `link=cellular` (15 of 50
    failing) fails less than A (10 of 10): A is not widened into it (the rule before widened it,
    since B's five would open on their own), and B's five are B's."""
    f = Fleetlet(db_url)
    a_cell = f.enrol(10, prefix="A", acquirer="A", carrier="Y", link="cellular")
    b_cell = f.enrol(40, prefix="B", acquirer="B", link="cellular", carrier="X")
    for i, tid in enumerate(a_cell):
        f.fail(tid, i / 2)
    for i, tid in enumerate(b_cell[:5]):
        f.fail(tid, 5 + i / 2)
    assert sorted(o["scope"].get("acquirer", str(o["scope"])) for o in f.outages()) == ["A", "B"]


def test_a_wide_scope_needs_failures_outside_its_largest_child():
    """Five cellular terminals failing, three on carrier X and two elsewhere, are no spread
    over the carriers (60 % is under the explain fraction); with three elsewhere they are."""
    fleet = default_settings().fleet
    labels = {f"T{i}": {"carrier": c, "acquirer": f"a{i}", "region": f"r{i}"} for i, c in enumerate("XXXYZ")}
    assert breadth.concentrated("link=cellular", labels, fleet)
    labels["T5"] = {"carrier": "Z", "acquirer": "a5", "region": "r5"}
    assert not breadth.concentrated("link=cellular", labels, fleet)


def test_an_older_incidents_table_is_widened_for_dismissed():
    """A PostgreSQL database made when status held at most 8 characters takes `dismissed`
    after an upgrade (SQLite does not enforce lengths)."""
    with fresh_pg_database() as url:
        engine = db.make_engine(url)
        db.create_schema(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE incidents ALTER COLUMN status TYPE VARCHAR(8)"))
        db.create_schema(engine)
        with engine.connect() as conn:
            kinds = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("incidents")}
        engine.dispose()
        assert kinds["status"].length == 16


def test_an_acquirer_outage_never_opens_as_its_link_type(db_url):
    """The same failures as above with the packaged settings: link=cellular, whose failing
    terminals are four fifths acquirer B's, opens nothing; B opens once its wifi terminals
    fail too, and holds all of its own bundles and no other acquirer's."""
    f = Fleetlet(db_url)
    b_cell = f.enrol(16, link="cellular")
    b_wifi = f.enrol(4, link="wifi")
    c_cell = f.enrol(180, prefix="C", acquirer="C", link="cellular")
    early = [f.fail(tid, i) for i, tid in enumerate(b_cell[:4])] + [f.fail(c_cell[0], 4)]
    assert f.outages() == []
    late = [f.fail(tid, 5 + i) for i, tid in enumerate(b_wifi + b_cell[4:8])]
    (outage,) = f.outages()
    assert outage["scope"] == {"acquirer": "B"} and outage["terminals_in_scope"] == 20
    assert f.held(early + late) == set(early[:4] + late)


def test_no_two_open_outages_cover_the_same_failing_terminals(db_url):
    """Acquirer B fails in both regions; three of acquirer C's north terminals fail at the
    same time. region=north is significant (13 of its 30 fail) but ten of those are B's, an
    outage already open: the three left open nothing, and B stays the only outage."""
    f = Fleetlet(db_url)
    b = f.enrol(20)
    c = f.enrol(40, prefix="C", acquirer="C")
    for i, tid in enumerate(b):
        f.fail(tid, i / 2)
    for i, tid in enumerate([t for t in c if f.labels[t]["region"] == "north"][:3]):
        f.fail(tid, 5 + i)
    assert [o["scope"] for o in f.outages()] == [{"acquirer": "B"}]


@pytest.mark.parametrize("long_minutes", [60.0, 10.0])
def test_a_night_trickle_opens_over_the_long_window(db_url, long_minutes):
    """Six of carrier X's twelve northern terminals fail one every twelve minutes (a DNS
    outage at night: never two in one 10-minute window). The long window sees the six in an
    hour and opens `carrier=X&region=north` with the fifth, its expected count per short
    window; with the long window as short as the short one (none), nothing opens. The sixth,
    twelve minutes after the fifth, is no longer within a short window of the outage's last
    failure and does not join it (the long window is not tested on a scope with an outage)."""
    f = Fleetlet(db_url, outage_long_window_minutes=long_minutes)
    x_north = f.enrol(12, prefix="X", carrier="X", region="north")
    f.enrol(10, prefix="XS", carrier="X", region="south")
    f.enrol(30, prefix="Y", carrier="Y")
    trickle = [f.fail(tid, 12 * i) for i, tid in enumerate(x_north[:6])]
    if long_minutes == 10.0:
        assert f.outages() == []
        return
    (outage,) = f.outages()
    assert outage["scope"] == {"carrier": "X", "region": "north"}
    assert outage["terminals_affected"] == 5 and outage["started_at"] == f.at(0)
    assert outage["expected"] == pytest.approx(0.002 * 12 / 6, rel=0.05)  # floor rate x 12 terminals x 10 minutes
    assert f.held(trickle) == set(trickle[:5])


def test_an_outage_split_over_two_regions_widens_to_their_acquirer(db_url):
    """A slow host degradation: acquirer B's north fails first (6 of its 20: `acquirer=B&
    region=north` opens), then its south (6 of 20) while the north goes on (8 failing). B
    fails 14 of 40, a little less than its north's 8 of 20 in the same minutes: about as much,
    and the outage widens to `acquirer=B` (a strictly larger share left it split)."""
    f = Fleetlet(db_url)
    b = f.enrol(40)
    f.enrol(40, prefix="C", acquirer="C")
    north = [t for t in b if f.labels[t]["region"] == "north"]
    south = [t for t in b if f.labels[t]["region"] == "south"]
    for i, tid in enumerate(north[:6]):
        f.fail(tid, i)
    assert [o["scope"] for o in f.outages()] == [{"acquirer": "B", "region": "north"}]
    for i, tid in enumerate(south[:6] + north[6:8]):
        f.fail(tid, 6 + i / 2)
    assert [o["scope"] for o in f.outages()] == [{"acquirer": "B"}]


def test_late_uploads_widening_into_a_scope_open_already_join_it(db_url):
    """Acquirer B's outage is open from minute 30; late uploads from before it then arrive:
    five of its northern terminals at minutes 0-2 (`acquirer=B&region=north` opens: B's open
    outage began too late to be near), then four southern ones. Their window widens the
    northern outage to B, whose outage is open already: the window joins that one (re-scoping
    the northern one to B broke the one-open-outage-per-scope rule and dropped the upload)."""
    f = Fleetlet(db_url)
    b = f.enrol(20)
    f.enrol(20, prefix="C", acquirer="C")
    north = [t for t in b if f.labels[t]["region"] == "north"]
    south = [t for t in b if f.labels[t]["region"] == "south"]
    for i, tid in enumerate(north[5:8] + south[5:8]):
        f.fail(tid, 30 + i / 2)
    assert [o["scope"] for o in f.outages()] == [{"acquirer": "B"}]
    for i, tid in enumerate(north[:5]):
        f.fail(tid, i / 2)
    for i, tid in enumerate(south[:4]):
        f.fail(tid, 3 + i / 2)
    (whole,) = [o for o in f.outages() if o["scope"] == {"acquirer": "B"}]
    assert whole["started_at"] == f.at(0)
