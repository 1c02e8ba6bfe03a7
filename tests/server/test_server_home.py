"""The home page is the fleet today: open incidents, counts that each lead to a list of
exactly that many (and agree with the API), failing terminals per hour against the expected
band; the hold shows wherever a verdict does; probe requests offer every probe the agent has."""

from __future__ import annotations

import re
from urllib.parse import unquote
from datetime import UTC, datetime, timedelta

import pytest
import requests
from server_bundles import make_bundle
from server_harness import start_server
from test_server_fleet_webhooks import db_url, enrol, settings  # noqa: F401  (db_url: a fixture)
from test_server_incident_actions import outage
from test_server_pages import csrf_of, signed_in

import probes
from remote.server import db

pytestmark = [pytest.mark.timeout(300), pytest.mark.clock]  # clock: the date matters (tests/clock/run.py)


@pytest.fixture()
def fleet(db_url, tmp_path):  # noqa: F811
    """An open outage (7 bundles held, on site by the terminals' own verdict), and beside it
    three on-site and two remote bundles no incident holds."""
    servers = start_server(db_url, tmp_path / "data", "home", settings(""))
    server = next(servers)
    try:
        incident, held = outage(server, "H", {"acquirer": "H", "region": "east"})
        now = datetime.now(UTC)
        tokens = enrol(server, "F", {"acquirer": "F", "region": "west"}, now, hours_ago=(1,), count=2)
        free = {}
        for k, verdict in enumerate(["onsite", "onsite", "onsite", "remote", "remote"]):
            bundle_id, body = make_bundle(tokens[k % 2], f"F-{k % 2}", verdict=verdict, created_at=db.stamp(now - timedelta(minutes=30 + k)))
            assert server.upload(tokens[k % 2], body, bundle_id).status_code == 201
            free[bundle_id] = verdict
        yield server, incident, held, free
    finally:
        servers.close()


def listed(session, url: str) -> set[str]:
    return set(re.findall(r'<a href="/bundles/([0-9a-f-]{36})">', session.get(url, timeout=30).text))


def test_home_counts_lead_to_their_lists_and_agree_with_the_api(fleet):
    server, incident, held, free = fleet
    session = signed_in(server)
    html = session.get(server.url + "/", timeout=30).text
    assert f'href="/incidents/{incident}"' in html and "acquirer=H, region=east" in html
    row = re.search(rf'<tr id="open-{incident}">.*?</tr>', html, re.S).group(0)
    assert f">{len(held)}</a>" in row  # bundles held

    found = dict(re.findall(r'id="count-(\w+)" href="[^"]*">(\d+)<', html))
    links = {k: href.replace("&amp;", "&") for k, href in re.findall(r'id="count-(\w+)" href="([^"]+)"', html)}
    assert int(found["onsite"]) == 3 and int(found["remote"]) == 2 and int(found["held"]) == len(held)
    assert listed(session, server.url + links["onsite"]) == {b for b, v in free.items() if v == "onsite"}
    assert listed(session, server.url + links["remote"]) == {b for b, v in free.items() if v == "remote"}
    assert listed(session, server.url + links["held"]) == set(held)
    since = unquote(re.search(r"since=([^&\"]+)", links["held"]).group(1))
    api = server.get("/api/v1/bundles", params={"verdict": "hold", "since": since, "limit": 100}).json()["items"]
    assert {b["id"] for b in api} == set(held)
    api = server.get("/api/v1/bundles", params={"verdict": "onsite", "held": "false", "since": since, "limit": 100}).json()["items"]
    assert len(api) == int(found["onsite"])
    assert 'id="failing-hours"' in html and 'class="slot"' in html
    assert "The fleet today" in html
    chinese = session.get(server.url + "/", headers={"Accept-Language": "zh"}, timeout=30).text
    assert "今日机群" in chinese and "待现场处理" in chinese and "To dispatch" not in chinese


def test_the_hold_shows_wherever_a_verdict_does(fleet):
    server, incident, held, free = fleet
    session = signed_in(server)
    hold = f'<a href="/incidents/{incident}" class="held">held: incident {incident[:8]}</a>'
    for path in ("/bundles", "/terminals/H-0", "/overview", f"/incidents/{incident}"):
        assert hold in session.get(server.url + path, timeout=30).text, path
    page = session.get(f"{server.url}/bundles", params={"terminal": "F-0"}, timeout=30).text
    assert "held: incident" not in page and ">on site<" in page
    overview = session.get(server.url + "/overview", timeout=30).text
    assert re.search(rf'id="held-onsite" href="/bundles\?verdict=onsite&amp;held=yes">{len(held)} held<', overview)
    bundle = session.get(f"{server.url}/bundles/{held[0]}", timeout=30).text
    assert f'href="/incidents/{incident}" id="incident-link"' in bundle


def test_probe_requests_offer_every_probe_the_agent_has(fleet):
    server, *_ = fleet
    session = signed_in(server)
    page = session.get(f"{server.url}/terminals/F-0", timeout=30).text
    offered = re.findall(r'name="probe" value="(\w+)"', page)
    assert offered == list(probes.probe_modules()) and {"modem", "payment_app"} <= set(offered)
    session.post(f"{server.url}/terminals/F-0/probes", data={"csrf": csrf_of(page), "probe": ["modem", "payment_app"]}, timeout=30)
    commands = server.get("/api/v1/terminals/F-0/commands").json()
    assert [c["probes"] for c in commands] == [["modem", "payment_app"]]


SENT = {"paper", "end", "sensor"}  # what make_bundle's printer finding and log line say, as the terminal sent them
ALLOWED = {"posdiag", "support", "English", "ISO", "UTC", "Webhook", "MiB", "dBm", "eMMC", "acquirer", "region", "east", "west", "host", "printer"}  # brand, switch, units, data


def english_words(text: str) -> set[str]:
    """The English words of a page's text a reader of 中文 would meet, but the allowed ones."""
    return set(re.findall(r"(?<![\w.=/-])[A-Za-z][A-Za-z']{2,}(?![\w.=/-])", text)) - ALLOWED


def every_page() -> list[str]:
    """The paths of every page the server serves (its routers', not a copy): GET routes
    left out of the API schema, but the static script."""
    from fastapi.routing import APIRoute

    from remote.server import admin_web, fleet_web, home_web, incidents_web, outcomes_web, web

    routers = (home_web, web, fleet_web, incidents_web, admin_web, outcomes_web)
    return [r.path for m in routers for r in m.router.routes if isinstance(r, APIRoute) and "GET" in r.methods and not r.path.startswith("/static/")]


def test_every_page_speaks_chinese_throughout(fleet):
    """Every page in 中文 with data on it, signed in as an admin (who sees every page): no
    English word but names, units and what the terminals sent (label keys and values, cause
    categories). A page added to a router is checked without being listed here."""
    from test_server_pages_i18n import visible_text

    server, incident, held, _ = fleet
    problem = server.get("/api/v1/problems").json()["items"][0]["id"]
    values = {"{incident_id}": incident, "{bundle_id}": held[0], "{terminal_id}": "H-0", "{problem_id}": problem}
    paths = every_page()
    assert {"/", "/overview", "/bundles/{bundle_id}", "/incidents/{incident_id}", "/outcomes", "/audit", "/settings"} <= set(paths)
    extra = ["/problems?kind=outcomes", "/bundles?verdict=hold"]  # the outcomes tab, the hold in a list
    admin = signed_in(server, "admin")
    for path in paths + extra:
        for name, value in values.items():
            path = path.replace(name, value)
        assert "{" not in path, f"a page whose path needs a value this test lacks: {path}"
        session = requests.Session() if path == "/login" else admin
        answer = session.get(server.url + path, headers={"Accept-Language": "zh"}, timeout=30)
        assert answer.status_code == 200, path
        words = re.sub(r"<code[^>]*>.*?</code>", "", answer.text, flags=re.S)  # keys, ids and values: machine text
        text = visible_text(words).replace("&nbsp;", " ")
        english = english_words(text)
        english -= set(probes.probe_modules()) | {"admin", "technician", "server"} | SENT  # probe names are ids; the users' names; the config section [server]
        assert not english, f"{path}: {sorted(english)}"
