"""Who may do what at the support server, revocation, escaping and CSRF (issue 8, security).

Two servers (uvicorn in threads) share one SQLite file, as behind a balancer. The access
matrix is checked against the OpenAPI document, so an operation added later without an entry
here fails the test instead of going unchecked. There is no user management over HTTP at all
(users are added with `posdiag-support users add`, which needs the database itself).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import uuid
from pathlib import Path

import pytest
import requests
from server_kit import PASSWORD, browser_env, make_bundle, rebuild, signed_in, start_server

from tests.conftest import ROOT

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
SUPPORT = ROOT / ".venv" / "bin" / "posdiag-support"

# (method, OpenAPI path) -> who may: "terminal" (its own), "users" (every role), "support"
# (support and admin), "admin", "anyone"
ACCESS = {
    ("get", "/healthz"): "anyone",
    ("get", "/metrics"): "anyone",
    ("post", "/api/v1/bundles"): "terminal",
    ("get", "/api/v1/terminals/{terminal_id}/commands/next"): "terminal",
    ("get", "/api/v1/bundles"): "users",
    ("get", "/api/v1/bundles/{bundle_id}"): "users",
    ("get", "/api/v1/bundles/{bundle_id}/download"): "users",
    ("get", "/api/v1/stats"): "users",
    ("get", "/api/v1/terminals"): "users",
    ("get", "/api/v1/terminals/{terminal_id}/commands"): "users",
    ("post", "/api/v1/terminals/{terminal_id}/commands"): "users",
    ("post", "/api/v1/terminals"): "admin",
    ("delete", "/api/v1/terminals/{terminal_id}"): "admin",
    ("post", "/api/v1/heartbeats"): "terminal",
    ("get", "/api/v1/problems"): "users",
    ("get", "/api/v1/problems/{problem_id}"): "users",
    ("get", "/api/v1/incidents"): "users",
    ("get", "/api/v1/incidents/{incident_id}"): "users",
    ("post", "/api/v1/incidents/{incident_id}/ack"): "support",
    ("post", "/api/v1/incidents/{incident_id}/notes"): "support",
    ("post", "/api/v1/incidents/{incident_id}/resolve"): "support",
    ("post", "/api/v1/incidents/{incident_id}/dismiss"): "support",
    ("post", "/api/v1/outcomes"): "terminal",
    ("get", "/api/v1/terminals/{terminal_id}/learned"): "terminal",
    ("post", "/api/v1/bundles/{bundle_id}/outcome"): "users",
    ("get", "/api/v1/bundles/{bundle_id}/outcome"): "users",
    ("get", "/api/v1/outcomes/measures"): "users",
    ("get", "/api/v1/learning"): "users",
    ("get", "/api/v1/learning/table"): "users",
    ("post", "/api/v1/learning/switch"): "admin",
    ("post", "/api/v1/learning/revert"): "admin",
    ("post", "/api/v1/learning/resume"): "admin",
    ("post", "/api/v1/learning/rebuild"): "admin",
    ("get", "/api/v1/audit"): "admin",
}
# An allowed caller's answer when the request is right but names nothing there: reverting
# to a table version no model has is 404 once access is granted.
ALLOWED_NOT_FOUND = {("post", "/api/v1/learning/revert")}
PRINCIPALS = ("nobody", "terminal", "other_terminal", "support", "technician", "admin")


@pytest.fixture()
def browser(tmp_path):
    """Headless chromium through Selenium, as in tests/server/conftest.py."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(chromium).exists() and Path(driver_path).exists()):
        pytest.skip(f"chromium or chromedriver not installed ({chromium}, {driver_path})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path, env=browser_env()), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    url = f"sqlite:///{tmp / 'shared.db'}"
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(contextlib.contextmanager(start_server)(url, tmp / "data", "sqlite"))
        second = stack.enter_context(contextlib.contextmanager(start_server)(url, tmp / "data", "sqlite", users=False))
        yield first, second


def test_access_matrix_covers_every_operation(pair):
    server, _ = pair
    document = requests.get(server.url + "/openapi.json", timeout=10).json()
    operations = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert operations == set(ACCESS), operations ^ set(ACCESS)


def call(server, method: str, path: str, who: str, tid: str, tokens: dict[str, str]) -> requests.Response:
    """One request for the operation as `who`, with valid parameters and body, so that
    only who is asking decides the answer."""
    bundle_id, body = make_bundle(tokens[tid], tid)
    stored = server.upload(tokens[tid], *reversed(make_bundle(tokens[tid], tid)))
    stored_id = stored.json()["id"]
    target = tid
    if path == "/api/v1/terminals/{terminal_id}" and who == "admin":
        target, _ = server.terminal("VICTIM")  # the admin's DELETE really revokes
    url = server.url + path.format(terminal_id=target, bundle_id=stored_id, **fleet_ids(server, stored_id, still_open=path.endswith("/resolve")))
    kw: dict = {"timeout": 30}
    if who in ("terminal", "other_terminal"):
        token = tokens[tid] if who == "terminal" else tokens["other"]
        kw["headers"] = {"Authorization": f"Bearer {token}"}
    elif who != "nobody":
        kw["auth"] = (who, PASSWORD)
    if (method, path) == ("post", "/api/v1/bundles"):
        kw["data"] = body
        kw.setdefault("headers", {})["Content-Type"] = "application/gzip"
    elif (method, path) == ("post", "/api/v1/terminals"):
        kw["json"] = {"id": f"NEW-{uuid.uuid4().hex[:8]}"}
    elif (method, path) == ("post", "/api/v1/heartbeats"):
        kw["json"] = {"terminal_id": tid, "sent_at": "2026-01-01T00:00:00Z"}
    elif (method, path) == ("post", "/api/v1/outcomes"):
        kw["json"] = outcome_record(tokens[tid], tid, stored_id)
    elif (method, path) == ("post", "/api/v1/bundles/{bundle_id}/outcome"):
        kw["json"] = {"found": "nothing"}
    elif (method, path) == ("post", "/api/v1/learning/switch"):
        kw["json"] = {"enabled": True, "model": "ACCESS-MODEL"}
    elif (method, path) == ("post", "/api/v1/learning/revert"):
        kw["json"] = {"model": "ACCESS-MODEL", "version": 999}
    elif (method, path) == ("post", "/api/v1/learning/resume"):
        kw["json"] = {"model": "ACCESS-MODEL"}
    elif (method, path) == ("post", "/api/v1/learning/rebuild"):
        pass
    elif path.startswith("/api/v1/incidents/"):
        kw["json"] = {"note": "looked at it"}
    elif (method, path) == ("get", "/api/v1/audit"):
        kw["params"] = {"action": "terminal.enrol", "limit": 5}
    elif (method, path) == ("get", "/api/v1/learning/table"):
        kw["params"] = {"model": "ACCESS-MODEL"}
    elif method == "post":
        kw["json"] = {"probes": ["printer"]}
    return requests.request(method, url, **kw)


def outcome_record(token: str, tid: str, bundle_id: str) -> dict:
    """A signed posdiag.outcome/1 record about the terminal's own stored bundle."""
    import hashlib

    from remote.outcome_wire import record_signature

    record = {
        "schema": "posdiag.outcome/1", "outcome_id": str(uuid.uuid4()), "terminal_id": tid, "bundle_id": bundle_id,
        "found": "nothing", "fixed": None, "note": "", "by": "tech", "visited_at": "2026-01-01T00:00:00.000000Z",
    }  # fmt: skip
    record["signature"] = record_signature(hashlib.sha256(token.encode("utf-8")).digest(), record)
    return record


def fleet_ids(server, bundle_id: str, still_open: bool = False) -> dict[str, str]:
    """The stored bundle's problem, and an incident (a closed one is made for the test,
    an open one when the operation resolves it)."""
    import json

    import sqlalchemy as sa

    from remote.server.fleet import incidents
    from remote.server.fleet.schema import bundle_fleet

    engine = server.service.engine
    server.counted()  # the fleet counts the stored bundle after its upload was answered
    with engine.begin() as conn:
        problem = conn.execute(sa.select(bundle_fleet.c.problem_id).where(bundle_fleet.c.bundle_id == bundle_id)).scalar_one()
        values = {
            "scope": '{"acquirer": "S"}', "categories": '["host"]', "codes": "[]", "started_at": "2026-01-01T00:00:00.000000Z",
            "detected_at": "2026-01-01T00:00:00.000000Z", "last_hit_at": "2026-01-01T00:10:00.000000Z",
            "terminals_affected": 5, "terminals_in_scope": 9, "bundles": 5, "expected": 0.1, "p_value": 1e-9,
            "summary": json.dumps({"en": "test", "zh": "测试"}),
        }  # fmt: skip
        incident, _ = incidents.open_incident(conn, "outage", f"acquirer=S-{uuid.uuid4().hex[:6]}", values)
        if not still_open:
            incidents.close(conn, incident, "2026-01-01T00:10:00.000000Z")
    return {"problem_id": problem, "incident_id": incident}


@pytest.mark.parametrize(("method", "path"), sorted(ACCESS))
def test_each_operation_answers_only_who_may(pair, method, path):
    server, _ = pair
    tid, token = server.terminal("M")
    other, other_token = server.terminal("O")
    tokens = {tid: token, other: other_token, "other": other_token}
    rule = ACCESS[(method, path)]
    allowed = {
        "anyone": set(PRINCIPALS),
        "terminal": {"terminal"},
        "users": {"support", "technician", "admin"},
        "support": {"support", "admin"},
        "admin": {"admin"},
    }[rule]
    for who in PRINCIPALS:
        status = call(server, method, path, who, tid, tokens).status_code
        if who in allowed and (method, path) in ALLOWED_NOT_FOUND:
            assert status == 404, (who, status)
        elif who in allowed:
            assert 200 <= status < 300, (who, status)
        elif who == "other_terminal" and path == "/api/v1/bundles":
            # Another terminal's bundle fails the signature under this token, which is
            # checked before the manifest is read (422); never stored.
            assert status in (401, 403, 422), (who, status)
        else:
            assert status in (401, 403), (who, status)


def test_a_terminal_token_opens_no_page(pair):
    server, _ = pair
    tid, token = server.terminal("P")
    for path in ("/", "/bundles", f"/terminals/{tid}", "/terminals"):
        answer = requests.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False, timeout=10)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), path


def test_a_terminal_cannot_upload_as_another_terminal(pair):
    server, _ = pair
    tid, token = server.terminal("A")
    other, other_token = server.terminal("B")
    # Signed with its own token but naming the other terminal ...
    bundle_id, body = make_bundle(token, other)
    answer = server.upload(token, body, bundle_id)
    assert (answer.status_code, answer.json()["error"]) == (403, "wrong_terminal")
    # ... or a bundle the other terminal really made, replayed with its own token (its
    # signature does not verify under this token, checked before the manifest is read).
    bundle_id, body = make_bundle(other_token, other)
    assert server.upload(token, body, bundle_id).json()["error"] == "bad_signature"
    # ... or its own bundle re-signed after the terminal id was changed.
    _, own = make_bundle(token, tid)
    changed = rebuild(token, own, manifest={"terminal": {"id": other, "serial": "", "model": "", "firmware": "", "app_version": ""}})
    assert server.upload(token, changed).status_code == 403
    assert server.get(f"/api/v1/bundles?terminal={other}").json()["items"] == []


def test_a_revoked_token_is_refused_at_once_on_every_server(pair):
    first, second = pair
    tid, token = first.terminal("R")
    bearer = {"Authorization": f"Bearer {token}"}
    for server in (first, second):  # both servers have seen the token work just now
        assert server.upload(token, *reversed(make_bundle(token, tid))).status_code == 201
        assert requests.get(f"{server.url}/api/v1/terminals/{tid}/commands/next", headers=bearer, timeout=10).status_code == 204
    assert requests.delete(f"{first.url}/api/v1/terminals/{tid}", auth=("admin", PASSWORD), timeout=30).status_code == 204
    for server in (second, first):
        assert server.upload(token, *reversed(make_bundle(token, tid))).status_code == 401
        assert requests.get(f"{server.url}/api/v1/terminals/{tid}/commands/next", headers=bearer, timeout=10).status_code == 401


def test_a_token_revoked_with_the_cli_is_refused_at_once(pair, tmp_path):
    import subprocess

    first, _ = pair
    tid, token = first.terminal("C")
    assert first.upload(token, *reversed(make_bundle(token, tid))).status_code == 201
    db_url = str(first.service.engine.url)
    done = subprocess.run([str(SUPPORT), "--db", db_url, "terminals", "revoke", tid], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert first.upload(token, *reversed(make_bundle(token, tid))).status_code == 401


def test_roles_below_admin_cannot_enrol_or_revoke_and_users_have_no_http_api(pair):
    server, _ = pair
    tid, _token = server.terminal("U")
    for role in ("support", "technician"):
        assert server.post("/api/v1/terminals", user=role, json={"id": "X-1"}).status_code == 403
        answer = requests.delete(f"{server.url}/api/v1/terminals/{tid}", auth=(role, PASSWORD), timeout=10)
        assert answer.status_code == 403
        for method in ("get", "post", "put", "delete"):
            answer = requests.request(method, f"{server.url}/api/v1/users", auth=(role, PASSWORD), json={}, timeout=10)
            assert answer.status_code in (404, 405), (role, method, answer.status_code)
    assert [t for t in server.get("/api/v1/terminals?limit=500").json()["items"] if t["id"] == tid][0]["revoked_at"] is None


def xss_bundle(token: str, tid: str) -> tuple[str, bytes]:
    bundle_id, body = make_bundle(token, tid, code="X55", cause=XSS, model=XSS, firmware=XSS, log_text=f"12:00 {XSS}\n")
    import io
    import json
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        diagnosis = json.loads(tar.extractfile("diagnosis.json").read())
        probes = json.loads(tar.extractfile("probes.json").read())
    top = diagnosis["causes"][0]
    top["title"]["en"] = XSS
    top["evidence_for"][0]["detail"] = XSS
    top["actions"]["technician"][0]["en"] = XSS
    diagnosis["error"]["meaning"]["en"] = XSS
    probes["probes"][0]["findings"][0]["detail"] = XSS
    probes["probes"][0]["status"] = f'"><script>alert(1)</script>'
    change = {"diagnosis.json": json.dumps(diagnosis).encode(), "probes.json": json.dumps(probes).encode()}
    return bundle_id, rebuild(token, body, change)


@pytest.fixture(scope="module")
def stored_xss(pair):
    server, _ = pair
    tid, token = server.terminal("XSS")
    bundle_id, body = xss_bundle(token, tid)
    assert server.upload(token, body, bundle_id).status_code == 201
    pages = ("/overview", f"/bundles?terminal={tid}", f"/bundles?model={XSS}", f"/bundles/{bundle_id}", f"/terminals/{tid}")
    return tid, bundle_id, pages


def test_stored_terminal_text_is_escaped_in_the_raw_html(pair, stored_xss):
    server, _ = pair
    _tid, _bundle_id, pages = stored_xss
    session = signed_in(server.url, "support")
    for path in pages:
        html = session.get(server.url + path, timeout=10).text
        scripts = re.findall(r"<script[^>]*>", html, re.I)
        assert scripts == ['<script src="/static/local-time.js" defer>'], path  # only the pages' own
        assert ESCAPED in html, path
    detail = session.get(server.url + pages[3], timeout=10).text
    assert detail.count(ESCAPED) >= 7  # model, firmware, cause id, title, evidence, action, meaning, log, finding


def test_no_dialog_fires_in_a_real_browser(pair, stored_xss, browser):
    from selenium.common.exceptions import NoAlertPresentException

    server, _ = pair
    _tid, _bundle_id, pages = stored_xss
    session = signed_in(server.url, "support")
    browser.get(server.url + "/login")
    browser.add_cookie({"name": "posdiag_session", "value": session.cookies["posdiag_session"], "path": "/"})
    for path in pages:
        browser.get(server.url + path)
        assert "login" not in browser.current_url, path
        assert XSS in browser.find_element("tag name", "body").text, path  # shown as text
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018


def test_forms_without_the_csrf_token_are_refused(pair):
    server, _ = pair
    tid, _ = server.terminal("F")
    session = signed_in(server.url, "technician")
    for path, form in (
        (f"/terminals/{tid}/probes", {"probe": "printer"}),
        ("/logout", {}),
        ("/login", {"name": "support", "password": PASSWORD}),
    ):
        for csrf in (None, "0" * 64):
            data = dict(form, **({"csrf": csrf} if csrf else {}))
            answer = session.post(server.url + path, data=data, allow_redirects=False, timeout=30)
            assert answer.status_code == 403, (path, csrf, answer.status_code)
    # A token is bound to its session: one minted for another session does not fit this one.
    stranger = signed_in(server.url, "support")
    page = stranger.get(f"{server.url}/terminals/{tid}", timeout=10).text
    token = page.split('name="csrf" value="')[1].split('"')[0]
    answer = session.post(
        f"{server.url}/terminals/{tid}/probes", data={"csrf": token, "probe": "printer"}, allow_redirects=False, timeout=30
    )
    assert answer.status_code == 403
    assert server.get(f"/api/v1/terminals/{tid}/commands").json() == []


def test_session_and_csrf_cookies_are_httponly_and_samesite(pair):
    server, _ = pair
    first = requests.get(server.url + "/login", timeout=10)
    csrf_cookie = first.headers["set-cookie"]
    token = first.text.split('name="csrf" value="')[1].split('"')[0]
    answer = requests.post(
        server.url + "/login", data={"csrf": token, "name": "support", "password": PASSWORD, "next": "/"},
        cookies=first.cookies, allow_redirects=False, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 303
    session_cookie = answer.headers["set-cookie"]
    for header in (csrf_cookie, session_cookie):
        parts = [p.strip().lower() for p in header.split(";")]
        assert "httponly" in parts and "samesite=lax" in parts, header
    assert session_cookie.startswith("posdiag_session=") and "max-age=" in session_cookie.lower()
