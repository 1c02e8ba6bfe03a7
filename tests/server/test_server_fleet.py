"""The fleet layer end to end: a simulated fleet (fleet_sim.py) talks to a real server on
SQLite and PostgreSQL through the HTTP API; every injected event must be found with the right
kind and scope, and nothing else."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fleet_sim import FleetSim, Scenario
from server_bundles import PASSWORD
from server_harness import default_settings, fresh_pg_database, start_server

from remote.server import db
from remote.server.fleet.problems import rebuild_counts
from remote.server.fleet.schema import problem_counts, problem_terminals

# A simulated fleet is a few hundred requests through the real API: more than the default limit.
pytestmark = [pytest.mark.timeout(600), pytest.mark.clock]  # clock: the date matters (tests/clock/run.py)


def sim_settings():
    """The packaged defaults, but a regression may be called on 8 terminals (the simulated
    fleet has 9 on the faulty firmware; a real fleet has far more)."""
    s = default_settings()
    return dataclasses.replace(s, fleet=dataclasses.replace(s.fleet, regression_min_terminals=8))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def run(request, tmp_path_factory):
    """One simulated fleet per backend, shared by the API and the browser tests."""
    tmp = tmp_path_factory.mktemp(f"fleet-{request.param}")
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp / 's.db'}" if request.param == "sqlite" else stack.enter_context(fresh_pg_database())
        server, sim, sent, servers = simulate(url, tmp / "data", Scenario())
        stack.enter_context(servers)
        yield request.param, server, sim, sent


def simulate(db_url: str, data_dir, scenario: Scenario):
    servers = start_server(db_url, data_dir, "fleet", sim_settings())
    server = next(servers)
    try:
        sim = FleetSim(server.url, server.service.engine, scenario, ("support", PASSWORD))
        sent = sim.run()
        server.counted()
        server.service.fleet.sweep()  # the background sweep runs every sweep_seconds; no waiting here
        return server, sim, sent, contextlib.closing(servers)
    except BaseException:
        servers.close()
        raise


def outages(items):
    return sorted((i for i in items if i["kind"] == "outage"), key=lambda i: i["started_at"])


def test_injected_events_are_found_and_nothing_else(run):
    _, server, sim, sent = run
    assert not sent.errors, sent.errors[:3]
    found = sim.incidents()
    host, carrier, regression = sim.injected

    # each outage: right scope, started within 10 min of the event, open 10 min after it
    got = outages(found)
    assert [o["scope"] for o in got] == [host.scope, carrier.scope], [(o["scope"], o["summary"]["en"]) for o in found]
    for incident, injected in zip(got, (host, carrier), strict=True):
        started = db.parse_time(incident["started_at"])
        assert abs(started - injected.start) <= timedelta(minutes=10)
        assert incident["status"] == "closed" and db.parse_time(incident["ended_at"]) < injected.start + timedelta(minutes=90)
        assert ("host" if injected is host else "network") in incident["categories"]
        assert set(incident["categories"]) <= {"host", "network"}
        assert [i["scope"] for i in sent.open_at_checkpoint[injected.name] if i["kind"] == "outage"][-1:] == [injected.scope]
        members = [t for t in sim.terminals if all(t.labels.get(k) == v for k, v in injected.scope.items()) and t.id not in sim.silent]
        assert incident["terminals_affected"] == len(members) <= incident["terminals_in_scope"]

    # the regression: one model's faulty firmware, printer problems
    regressions = [i for i in found if i["kind"] == "regression"]
    assert [(r["scope"], r["categories"]) for r in regressions] == [(regression.scope, ["printer"])]
    assert len(found) == 3

    # every bundle of an outage is held, nothing outside one is
    page = server.get("/api/v1/bundles", params={"limit": 500}).json()
    items = {b["id"]: b for b in page["items"]}
    cursor = page["next_cursor"]
    while cursor:
        page = server.get("/api/v1/bundles", params={"limit": 500, "cursor": cursor}).json()
        items.update({b["id"]: b for b in page["items"]})
        cursor = page["next_cursor"]
    for bundle_id, what in sent.bundles.items():
        hold = items[bundle_id]["fleet_dispatch"]
        if what["injected"] in (host.name, carrier.name):
            assert hold and hold["verdict"] == "hold" and items[bundle_id]["verdict"] == "remote", what
        elif what["category"] not in ("host", "network"):
            assert hold is None, what
    held = next(b for b, w in sent.bundles.items() if w["injected"] == host.name)
    record = server.get(f"/api/v1/bundles/{held}").json()["record"]
    assert record["fleet_dispatch"]["incident_id"] == got[0]["id"]
    assert "Hold any dispatch" in record["fleet_dispatch"]["reason"]["en"] and "暂缓派单" in record["fleet_dispatch"]["reason"]["zh"]

    # inventory: the worn battery batch is at risk, the silent ones missing, filters work
    at_risk = server.get("/api/v1/terminals", params={"status": "at_risk", "limit": 500}).json()["items"]
    assert {t["id"] for t in at_risk} == sim.battery_batch
    assert all(t["risk"]["metric"] == "battery_wear_ratio" and t["risk"]["threshold"] == 0.6 for t in at_risk)
    missing = server.get("/api/v1/terminals", params={"status": "missing", "limit": 500}).json()["items"]
    assert {t["id"] for t in missing} == sim.silent
    b_north = server.get("/api/v1/terminals", params={"label.acquirer": "B", "label.region": "north", "limit": 500}).json()["items"]
    assert {t["id"] for t in b_north} == {t.id for t in sim.terminals if t.labels["acquirer"] == "B" and t.labels["region"] == "north"}
    assert all(t["last_heartbeat_at"] and t["model"] in ("A920", "P2") for t in b_north)

    # problems: ranked by terminals affected, the firmware bug's rollups
    problems = server.get("/api/v1/problems", params={"limit": 3}).json()
    ranks = [p["terminals_affected"] for p in problems["items"]]
    assert ranks == sorted(ranks, reverse=True) and problems["next_cursor"]
    bug = server.get("/api/v1/problems", params={"model": "P2", "firmware": "2.1", "limit": 1}).json()["items"][0]
    faulty = [t for t in sim.terminals if (t.model, t.firmware) == ("P2", "2.1")]
    assert bug["top_cause"] == "printer.driver_fault" and bug["terminals_affected"] == len(faulty) >= 8
    everywhere = {p["id"]: p for p in server.get("/api/v1/problems", params={"limit": 200}).json()["items"]}
    assert everywhere[bug["id"]]["terminals_affected"] == len(faulty)  # a terminal counts once, whatever the days
    with db.writing(server.service.engine) as conn:  # what an upgraded database is filled with equals what ingest kept
        kept = [sorted(conn.execute(sa.select(t)).all()) for t in (problem_counts, problem_terminals)]
        rebuild_counts(conn)
        assert [sorted(conn.execute(sa.select(t)).all()) for t in (problem_counts, problem_terminals)] == kept
    for days in (0, 1, 3):  # the last days from each terminal's newest day = counted over every day's hits
        since = sim.sc.end - timedelta(days=days)
        recent = server.get("/api/v1/problems", params={"since": db.stamp(since), "limit": 200}).json()["items"]
        counted = server.get("/api/v1/problems", params={"since": db.stamp(since), "until": "2999-01-01T00:00:00Z", "limit": 200}).json()["items"]
        assert [(p["id"], p["terminals_affected"], p["bundles"]) for p in recent] == [
            (p["id"], p["terminals_affected"], p["bundles"]) for p in counted
        ]
        # `since` counts whole UTC days: just after midnight, today may have no bundle yet
        sent_since = {w["terminal"] for w in sent.bundles.values() if w["at"].date() >= since.date()}
        assert bool(recent) == bool(sent_since) and (days == 0 or recent)
    assert [m["key"] for m in bug["by_model"]] == ["P2"] and [f["key"] for f in bug["by_firmware"]] == ["2.1"]
    assert sum(d["count"] for d in bug["daily"]) == bug["bundles"] and set(bug["by_label"]) >= {"acquirer", "region"}
    following = server.get("/api/v1/problems", params={"limit": 3, "cursor": problems["next_cursor"]}).json()["items"]
    assert not {p["id"] for p in following} & {p["id"] for p in problems["items"]}


def test_late_uploads_give_the_same_incidents(run, tmp_path):
    """The same fleet again (same seed), but four of the outage's terminals upload three
    hours late (offline during it): the same incidents come out, each starting within a
    minute of the on-time run's, and the late bundles are held too."""
    backend, _, on_time, _ = run
    if backend != "sqlite":
        pytest.skip("compared once, on SQLite: the detector's queries are the same on both")
    first = on_time.incidents()
    late_server, late, sent, servers = simulate(f"sqlite:///{tmp_path / 'late.db'}", tmp_path / "late", Scenario(late_terminals=4))
    with servers:
        assert late.late and not sent.errors
        second = late.incidents()
        key = lambda items: [(i["kind"], i["scope"], i["terminals_affected"]) for i in sorted(items, key=lambda i: i["started_at"])]  # noqa: E731
        assert key(second) == key(first) and len(outages(first)) == 2
        for a, b, x, y in zip(outages(first), outages(second), on_time.injected, late.injected, strict=False):
            # each run's timeline ends at its own now: compare starts relative to the injection
            assert abs((db.parse_time(a["started_at"]) - x.start) - (db.parse_time(b["started_at"]) - y.start)) <= timedelta(minutes=1)
        held = [b for b, w in sent.bundles.items() if w["terminal"] in late.late and w["injected"]]
        assert held
        for bundle_id in held:
            assert late_server.get(f"/api/v1/bundles/{bundle_id}").json()["record"]["fleet_dispatch"]["verdict"] == "hold"


SHOTS = Path(__file__).resolve().parents[2] / "bench" / "out"


def test_fleet_pages_in_a_browser(run, browser):
    """Problems, Incidents, Terminals and a terminal page as support sees them; the PNGs go
    to bench/out/ (git-ignored) to be looked at."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    backend, server, sim, _ = run
    browser.get(server.url + "/login")
    browser.find_element(By.ID, "name").send_keys("support")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 20).until(lambda b: "/login" not in b.current_url)  # the session cookie is set
    SHOTS.mkdir(parents=True, exist_ok=True)

    browser.get(server.url + "/problems")
    rows = browser.find_elements(By.CSS_SELECTOR, "#problems tr")[1:]
    counts = [int(r.find_element(By.CSS_SELECTOR, "td").text) for r in rows]
    assert counts and counts == sorted(counts, reverse=True)
    assert browser.find_elements(By.CSS_SELECTOR, "#problems polyline")
    browser.save_screenshot(str(SHOTS / f"fleet-problems-{backend}.png"))

    browser.get(server.url + "/incidents")
    text = browser.find_element(By.ID, "incidents").text
    assert "acquirer=B" in text and "carrier=X, region=north" in text and "firmware=2.1, model=P2" in text
    browser.save_screenshot(str(SHOTS / f"fleet-incidents-{backend}.png"))
    assert browser.find_elements(By.ID, "outage-banner") == []  # both outages are over

    browser.get(server.url + "/terminals?status=at_risk")
    listed = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#terminals td:first-child a")}
    assert listed == sim.battery_batch
    browser.save_screenshot(str(SHOTS / f"fleet-terminals-at-risk-{backend}.png"))

    worn = sorted(sim.battery_batch)[0]
    browser.get(server.url + f"/terminals/{worn}")
    assert "At risk" in browser.find_element(By.ID, "risk").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#health figure")) >= 4
    browser.save_screenshot(str(SHOTS / f"fleet-terminal-{backend}.png"))
    assert all((SHOTS / f"fleet-{name}-{backend}.png").stat().st_size > 5000 for name in ("problems", "incidents", "terminal"))
