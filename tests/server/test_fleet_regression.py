"""The regression detector counts terminal-days, not bundles: a few terminals retrying
uploads never make a version look bad, while a staged rollout whose firmware breaks the
printer on a share of its terminals' days is found."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from server_harness import default_settings

from remote.server import db
from remote.server.fleet import regression
from remote.server.fleet.schema import bundle_fleet, incidents, terminal_days

T0 = datetime(2026, 5, 1, tzinfo=UTC)
DAYS = 3
TABLES = [bundle_fleet, terminal_days, incidents]


class Fleet:
    """One model: 75 terminals on firmware 1.0 and 25 on 1.1, each active every day."""

    def __init__(self) -> None:
        self.engine = sa.create_engine("sqlite://")
        db.metadata.create_all(self.engine, tables=TABLES)
        self.firmware = {f"T{i:03d}": "1.1" if i < 25 else "1.0" for i in range(100)}
        self.n = 0
        with self.engine.begin() as conn:
            conn.execute(terminal_days.insert(), [
                {"terminal_id": t, "day": (T0 + timedelta(days=d)).date().isoformat(), "model": "M", "firmware": f, "app_version": "5.0"}
                for t, f in self.firmware.items() for d in range(DAYS)
            ])  # fmt: skip

    def bundles(self, terminal: str, at: datetime, category: str, count: int = 1) -> None:
        rows = []
        for i in range(count):
            self.n += 1
            when = db.stamp(at + timedelta(seconds=3 * i))
            rows.append({"bundle_id": f"b{self.n}", "terminal_id": terminal, "event_at": when, "top_category": category,
                         "model": "M", "firmware": self.firmware[terminal], "app_version": "5.0"})  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(bundle_fleet.insert(), rows)

    def background(self, rng: random.Random, share: float = 0.08) -> None:
        """Printer and reader problems on `share` of every terminal's days, whatever its firmware."""
        for t in self.firmware:
            for d in range(DAYS):
                for category in ("printer", "reader"):
                    if rng.random() < share:
                        self.bundles(t, T0 + timedelta(days=d, hours=rng.uniform(7, 21)), category, rng.randint(1, 3))

    def detect(self, **changes) -> list[dict]:
        mark = db.stamp(T0 + timedelta(days=DAYS) - timedelta(minutes=1))
        with self.engine.begin() as conn:
            regression.detect(conn, mark, dataclasses.replace(default_settings().fleet, **changes), mark)
            return [dict(r) for r in conn.execute(sa.select(incidents).where(incidents.c.kind == "regression")).mappings()]


def test_retry_storms_of_a_few_terminals_open_no_regression():
    """3 terminals x 200 uploads and 1 x 120 in ten minutes, all on the smaller firmware."""
    for seed in range(5):
        fleet = Fleet()
        fleet.background(random.Random(seed))
        storm = T0 + timedelta(days=1, hours=10)
        for terminal, count in (("T000", 200), ("T001", 200), ("T002", 200), ("T003", 120)):
            fleet.bundles(terminal, storm, "printer", count)
        assert fleet.detect() == [], seed


def test_a_storm_beside_a_handful_of_failing_terminals_is_still_no_regression():
    """Five terminals on 1.1 with one printer day each, one of them retrying 200 times: five
    terminal-days against the other firmware's background is no regression."""
    fleet = Fleet()
    fleet.background(random.Random(11))
    for i in range(5):
        fleet.bundles(f"T{i:03d}", T0 + timedelta(days=2, hours=9 + i), "printer", 200 if i == 0 else 1)
    assert fleet.detect() == []


def faulty(seed: int) -> Fleet:
    """Printer problems on 40 % of the days of the terminals on 1.1, beside the background."""
    rng = random.Random(seed)
    fleet = Fleet()
    fleet.background(rng)
    for t, firmware in fleet.firmware.items():
        for d in range(DAYS):
            if firmware == "1.1" and rng.random() < 0.4:
                fleet.bundles(t, T0 + timedelta(days=d, hours=rng.uniform(7, 21)), "printer")
    return fleet


def test_an_open_regression_stays_open_until_its_version_no_longer_stands_out():
    """Near the opening threshold a regression does not close and open again from one sweep
    to the next: it stays while its tail is under regression_close_p_value."""
    fleet = faulty(1)
    (opened,) = fleet.detect()
    assert opened["status"] == "open"
    assert [(r["id"], r["status"]) for r in fleet.detect(regression_p_value=1e-300)] == [(opened["id"], "open")]
    assert [(r["id"], r["status"]) for r in fleet.detect(regression_p_value=1e-300, regression_close_p_value=1e-300)] == [(opened["id"], "closed")]


def test_a_firmware_that_breaks_the_printer_on_its_terminals_days_is_found():
    found = 0
    for seed in range(10):
        got = faulty(seed).detect()
        assert all(r["scope_key"] == "firmware=1.1&model=M" and r["categories"] == '["printer"]' for r in got), got
        found += bool(got)
        if got:
            summary = got[0]["summary"]
            assert "of its terminal-days" in summary and "of 25 terminals" in summary
    assert found >= 9


def test_the_day_a_terminal_is_updated_counts_on_its_new_version_too():
    """terminal_days keeps a day's first sighting (the old firmware); the faults that day on
    the new one still have their terminal-day beside them: never more than 100 %."""
    fleet = Fleet()
    fleet.background(random.Random(5))
    day0 = T0.date().isoformat()
    with fleet.engine.begin() as conn:
        conn.execute(terminal_days.update().where(terminal_days.c.day == day0, terminal_days.c.firmware == "1.1").values(firmware="1.0"))
    for t, firmware in fleet.firmware.items():
        if firmware == "1.1":
            for d in range(DAYS):
                fleet.bundles(t, T0 + timedelta(days=d, hours=15), "printer")
    (found,) = fleet.detect()
    assert found["scope_key"] == "firmware=1.1&model=M" and "printer problems on 100% of its terminal-days" in found["summary"]
