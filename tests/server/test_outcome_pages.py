"""The outcome pages over real HTTP: the bundle page's form records through the API's checks
(CSRF, roles, unknown cause, a replayed form), and /outcomes shows the measures in English and
Chinese."""

from __future__ import annotations

import html
import re

import requests
from outcome_bundles import uploaded
from server_bundles import PASSWORD


def csrf_of(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


def form_of(text: str) -> dict[str, str]:
    form = text[text.index('id="outcome-form"') :]
    return {"csrf": csrf_of(form), "outcome_id": re.search(r'name="outcome_id" value="([^"]+)"', form).group(1)}


def signed_in(server, user: str) -> requests.Session:
    session = requests.Session()
    page = session.get(server.url + "/login", timeout=10)
    done = session.post(server.url + "/login", data={"csrf": csrf_of(page.text), "name": user, "password": PASSWORD, "next": "/"},
                        allow_redirects=False, timeout=10)  # fmt: skip
    assert done.status_code == 303
    return session


def history(server, bundle_id: str) -> list[dict]:
    return server.get(f"/api/v1/bundles/{bundle_id}/outcome").json()["history"]


def test_a_technician_records_an_outcome_on_the_bundle_page_once(server):
    tid, token = server.terminal("OP")
    bid = uploaded(server, token, tid, ["printer.mechanism_fault", "printer.not_connected"])
    session = signed_in(server, "technician")
    page = session.get(f"{server.url}/bundles/{bid}", timeout=10)
    assert "No visit outcome recorded yet." in page.text
    listed = page.text[page.text.index('id="outcome-found"') :]
    assert listed.index('value="printer.mechanism_fault"') < listed.index('value="nothing"') < listed.index('value="power.battery_worn"')
    form = dict(form_of(page.text), found="printer.not_connected", fixed="true", note="driver restarted")
    sent = session.post(f"{server.url}/bundles/{bid}/outcome", data=form, allow_redirects=False, timeout=10)
    assert (sent.status_code, sent.headers["location"]) == (303, f"/bundles/{bid}#outcome")
    [stored] = history(server, bid)
    assert (stored["found"], stored["fixed"], stored["note"], stored["by"], stored["via"]) == (
        "printer.not_connected", True, "driver restarted", "technician", "page",
    )  # fmt: skip
    shown = html.unescape(session.get(f"{server.url}/bundles/{bid}", timeout=10).text)
    assert "Found: printer disconnected or not responding" in shown
    assert "driver restarted" in shown and "on this page" in shown and "Record a later visit" in shown

    again = session.post(f"{server.url}/bundles/{bid}/outcome", data=form, allow_redirects=False, timeout=10)
    assert again.status_code == 303 and len(history(server, bid)) == 1  # the same form twice: once
    changed = session.post(f"{server.url}/bundles/{bid}/outcome", data=dict(form, found="nothing"), timeout=10)
    assert changed.status_code == 409 and "outcome_id_reused" in changed.text and len(history(server, bid)) == 1
    home = html.unescape(session.get(server.url + "/", timeout=10).text)
    line = home[home.index('id="home-visits"') :].split("</p>")[0]
    assert re.search(r"Visit outcomes, last \d+ days: [1-9]\d* visits; found as predicted \d+%, no fault found \d+%", line), line
    assert 'href="/outcomes"' in line


def test_bad_outcomes_from_the_page_are_refused_with_why(server):
    tid, token = server.terminal("OQ")
    bid = uploaded(server, token, tid, ["printer.mechanism_fault"])
    session = signed_in(server, "support")
    form = form_of(session.get(f"{server.url}/bundles/{bid}", timeout=10).text)
    unknown = session.post(f"{server.url}/bundles/{bid}/outcome", data=dict(form, found="printer.mechanism_falt", fixed="true"), timeout=10)
    assert unknown.status_code == 422 and "did you mean printer.mechanism_fault?" in html.unescape(unknown.text)
    unsaid = session.post(f"{server.url}/bundles/{bid}/outcome", data=dict(form, found="other", fixed="false"), timeout=10)
    assert unsaid.status_code == 422 and "note_required" in unsaid.text
    forged = session.post(f"{server.url}/bundles/{bid}/outcome", data=dict(form, csrf="0" * 64, found="nothing"), timeout=10)
    assert forged.status_code == 403
    stranger = requests.post(f"{server.url}/bundles/{bid}/outcome", data=dict(form, found="nothing"), allow_redirects=False, timeout=10)
    assert stranger.status_code == 303 and stranger.headers["location"].startswith("/login")
    missing = session.post(f"{server.url}/bundles/{'0' * 8}-0000-0000-0000-{'0' * 12}/outcome", data=dict(form, found="nothing"), timeout=10)
    assert missing.status_code == 404
    assert history(server, bid) == []


def test_the_outcomes_page_shows_the_measures_in_english_and_chinese(server):
    model = "OM-" + server.terminal("OX")[0][-6:]
    tid, token = server.terminal("OM")
    for found in ("printer.mechanism_fault", "printer.mechanism_fault", "nothing", "printer.paper_out"):
        bid = uploaded(server, token, tid, ["printer.mechanism_fault", "printer.not_connected"], model=model)
        assert server.post(f"/api/v1/bundles/{bid}/outcome", json={"found": found, "fixed": True}).status_code == 201
    session = signed_in(server, "support")
    page = session.get(f"{server.url}/outcomes", params={"by": "model", "model": model, "days": "7"}, timeout=10)
    assert page.status_code == 200
    row = next(r for r in page.text.split("<tr") if f"<td>{model}</td>" in r)
    cells = re.findall(r'data-measure="(\w+)">([^<]*)', row)
    assert dict(cells)["found_as_predicted"].startswith("50%") and dict(cells)["no_fault_found"].startswith("25%")
    assert "<td>4</td>" in row and "Found as predicted" in page.text and 'selected>7 days' in page.text
    by_cause = session.get(f"{server.url}/outcomes", params={"by": "cause", "model": model}, timeout=10).text
    assert "printer.mechanism_fault" in by_cause
    zh = session.get(f"{server.url}/outcomes", params={"by": "verdict", "model": model}, headers={"Accept-Language": "zh-CN"}, timeout=10)
    assert "上门结果" in zh.text and "与预测一致" in zh.text and "现场处理" in zh.text
    none = session.get(f"{server.url}/outcomes", params={"model": "no-such-model"}, timeout=10)
    assert "No visit outcome in this window." in none.text
    assert requests.get(f"{server.url}/outcomes", allow_redirects=False, timeout=10).status_code == 303
