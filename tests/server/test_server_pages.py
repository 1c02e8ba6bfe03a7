"""Web pages over real HTTP: sign-in, CSRF, escaping of terminal data, the chart, the forms."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa
from server_bundles import PASSWORD, make_bundle

pytestmark = pytest.mark.clock  # the date matters: tests/clock/run.py runs this module at midnight

XSS = '<script>alert("x")</script>'


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


class CountedSession(requests.Session):
    """A signed-in browser session that, like server.get, reads only after the fleet queue's
    worker has counted every upload answered so far: what a support user reads next shows them."""

    def __init__(self, server) -> None:
        super().__init__()
        self.server = server

    def request(self, *args, **kwargs) -> requests.Response:  # type: ignore[override]
        if hasattr(self.server, "counted"):
            self.server.counted()
        return super().request(*args, **kwargs)


def signed_in(server, user: str = "support") -> requests.Session:
    session = CountedSession(server)
    page = session.get(server.url + "/login", timeout=10)
    done = session.post(
        server.url + "/login",
        data={"csrf": csrf_of(page.text), "name": user, "password": PASSWORD, "next": "/bundles"},
        allow_redirects=False,
        timeout=10,
    )
    assert done.status_code == 303 and done.headers["location"] == "/bundles"
    cookie = next(c for c in session.cookies if c.name == "posdiag_session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    return session


def test_pages_need_a_sign_in(server):
    for path in ("/", "/bundles", "/terminals", "/terminals/x", "/bundles/x"):
        response = requests.get(server.url + path, allow_redirects=False, timeout=10)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path


def test_sign_in_rejects_a_wrong_password_and_a_missing_csrf_token(server):
    session = requests.Session()
    page = session.get(server.url + "/login", timeout=10)
    wrong = session.post(server.url + "/login", data={"csrf": csrf_of(page.text), "name": "support", "password": "nope"}, timeout=10)
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    forged = requests.post(server.url + "/login", data={"csrf": "0" * 64, "name": "support", "password": PASSWORD}, timeout=10)
    assert forged.status_code == 403


def test_next_never_leaves_the_site(server):
    session = requests.Session()
    page = session.get(server.url + "/login", timeout=10)
    done = session.post(
        server.url + "/login",
        data={"csrf": csrf_of(page.text), "name": "support", "password": PASSWORD, "next": "//evil.example/"},
        allow_redirects=False,
        timeout=10,
    )
    assert done.headers["location"] == "/"


def test_terminal_data_is_escaped_everywhere(server):
    tid, token = server.terminal("X")
    bundle_id, body = make_bundle(token, tid, code="E3", cause=XSS, category="printer", model=XSS, log_text=XSS)
    assert server.upload(token, body, bundle_id).status_code == 201
    session = signed_in(server)
    for path in ("/overview", f"/bundles?terminal={tid}", f"/bundles/{bundle_id}", f"/terminals/{tid}"):
        html = session.get(server.url + path, timeout=10).text
        assert XSS not in html, path
        assert "&lt;script&gt;" in html, path


def test_overview_draws_a_chart_and_counts(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, category="printer")
    server.upload(token, body, bundle_id)
    html = signed_in(server).get(server.url + "/overview", timeout=10).text
    assert '<svg id="chart"' in html and "<rect" in html and "printer" in html
    assert re.search(r'id="total" href="/bundles">\d+<', html)
    assert re.search(r'id="verdict-onsite" href="/bundles\?verdict=onsite">\d+<', html)  # every count is a link
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/local-time.js" defer>']  # our own, nothing else
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_bundle_page_shows_diagnosis_probes_logs_and_download(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, code="E3", log_text="printer: paper end at 12:00\n")
    server.upload(token, body, bundle_id)
    session = signed_in(server)
    html = session.get(f"{server.url}/bundles/{bundle_id}", timeout=10).text
    for text in ("Cause printer.paper_out", "70%", "Nothing remote", "Load paper", "printer.paper_out: paper end",
                 "printer: paper end at 12:00", f"/api/v1/bundles/{bundle_id}/download", ">on site<"):
        assert text in html, text
    assert "Check the sensor" not in html  # a support user sees support's and the merchant's actions
    # what support acts on comes first: dispatch and the top cause before the probe table; lower causes folded
    assert html.index('id="verdict"') < html.index('id="top-cause"') < html.index('id="probes"')
    assert '<details id="other-causes">' in html and html.index("Card") > html.index('<details id="other-causes">')
    assert "{" not in html.split('id="top-cause"')[1].split('id="probes"')[0]  # no raw JSON
    technician = signed_in(server, "technician").get(f"{server.url}/bundles/{bundle_id}", timeout=10).text
    assert "Check the sensor" in technician and "Nothing remote" not in technician
    assert session.get(f"{server.url}/api/v1/bundles/{bundle_id}/download", timeout=10).content == body


def test_bundle_list_filters_and_pages(server):
    tid, token = server.terminal()
    for _ in range(3):
        bundle_id, body = make_bundle(token, tid, code="96")
        server.upload(token, body, bundle_id)
    session = signed_in(server)
    html = session.get(server.url + "/bundles", params={"terminal": tid, "code": "96"}, timeout=10).text
    assert html.count(f'href="/terminals/{tid}"') == 3
    bad = session.get(server.url + "/bundles", params={"since": "tuesday"}, timeout=10)
    assert bad.status_code == 200 and "not a date" in bad.text


def test_request_probes_form_queues_a_command_and_needs_csrf(server):
    tid, _ = server.terminal()
    session = signed_in(server, "technician")
    page = session.get(f"{server.url}/terminals/{tid}", timeout=10)
    done = session.post(
        f"{server.url}/terminals/{tid}/probes",
        data={"csrf": csrf_of(page.text), "probe": ["printer", "power", "bogus"], "code": "E3"},
        timeout=10,
    )
    assert done.status_code == 200 and 'id="requested"' in done.text
    commands = server.get(f"/api/v1/terminals/{tid}/commands").json()
    assert [(c["probes"], c["code"], c["requested_by"]) for c in commands] == [(["printer", "power"], "E3", "technician")]
    refused = session.post(f"{server.url}/terminals/{tid}/probes", data={"csrf": "f" * 64}, timeout=10)
    assert refused.status_code == 403
    assert len(server.get(f"/api/v1/terminals/{tid}/commands").json()) == 1


def test_sign_out(server):
    session = signed_in(server)
    page = session.get(server.url + "/", timeout=10)
    session.post(server.url + "/logout", data={"csrf": csrf_of(page.text)}, timeout=10)
    assert session.get(server.url + "/", allow_redirects=False, timeout=10).status_code == 303


def test_a_slow_outage_banner_read_does_not_stall_other_requests(server):
    """Every signed-in page reads the open outages for its banner; with that read slow, the
    page waits, and nothing else does (the read is off the event loop)."""
    session = signed_in(server)
    started = threading.Event()

    def slow(conn, cursor, statement, *args):
        if "FROM incidents" in statement:
            started.set()
            time.sleep(2)

    sa.event.listen(server.service.engine, "before_cursor_execute", slow)
    try:
        with ThreadPoolExecutor(1) as pool:
            page = pool.submit(session.get, server.url + "/terminals", timeout=30)
            assert started.wait(10)
            begun = time.monotonic()
            assert requests.get(server.url + "/healthz", timeout=30).status_code == 200
            assert time.monotonic() - begun < 1.0
            assert page.result().status_code == 200
    finally:
        sa.event.remove(server.service.engine, "before_cursor_execute", slow)


def test_logs_are_redacted_again_on_the_way_out(server):
    tid, token = server.terminal()
    leaked = "12:00 card 4111111111111111 declined\n"
    bundle_id, body = make_bundle(token, tid, log_text=leaked)
    server.upload(token, body, bundle_id)
    html = signed_in(server).get(f"{server.url}/bundles/{bundle_id}", timeout=10).text
    assert "4111111111111111" not in html and "411111******1111" in html
    assert "4111111111111111" not in server.get(f"/api/v1/bundles/{bundle_id}").text


def test_diagnosis_and_probe_texts_are_redacted_again_on_the_way_out(server):
    tid, token = server.terminal()
    probes = [{"name": "card_reader", "status": "fail", "duration_ms": 1.0, "metrics": {},
               "findings": [{"id": "reader.bad_frame", "severity": "fail", "detail": "echo 4111111111111111", "data": {}}]}]  # fmt: skip
    bundle_id, body = make_bundle(token, tid, probes=probes)
    server.upload(token, body, bundle_id)
    assert "4111111111111111" not in server.get(f"/api/v1/bundles/{bundle_id}").text
    assert "4111111111111111" not in signed_in(server).get(f"{server.url}/bundles/{bundle_id}", timeout=10).text


def test_chart_stacks_categories_per_day_and_scales_to_the_busiest_day():
    from datetime import date

    from remote.server import chart

    per_day = [
        {"day": "2026-01-02", "category": "printer", "count": 3},
        {"day": "2026-01-02", "category": None, "count": 1},
        {"day": "2026-01-03", "category": "printer", "count": 2},
    ]
    drawn = chart.build(per_day, date(2026, 1, 1), 3)
    assert [name for _, name in drawn.legend] == ["printer", "unknown"]
    busiest = [b for b in drawn.bars if b.title.startswith("2026-01-02")]
    assert len(busiest) == 2 and round(min(b.y for b in busiest), 1) == chart.TOP
    assert round(sum(b.height for b in busiest), 1) == chart.HEIGHT - chart.BOTTOM - chart.TOP
    assert not [b for b in drawn.bars if b.title.startswith("2026-01-01")]
    assert [label for _, label in drawn.labels] == ["01-01", "01-02", "01-03"]
