"""Administration from the web and the audit log (issue 23): an admin enrols a terminal (its
token shown once, with the lines to paste into the terminal's posdiag.toml) and revokes it,
manages users, reads the effective settings with secrets masked, and every such change, made
on a page, through the API or on the command line, is in the audit log (`GET /audit`,
`GET /api/v1/audit`), which retention trims like the bundles. Other roles see none of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from server_bundles import PASSWORD, make_bundle
from server_harness import default_settings, fresh_pg_database

from remote.server import admin_web, audit, db, retention, store
from remote.server.cli import main as cli_main


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def signed_in(server, user: str) -> requests.Session:
    session = requests.Session()
    token = csrf_of(session.get(server.url + "/login", timeout=10).text)
    answer = session.post(
        server.url + "/login", data={"csrf": token, "name": user, "password": PASSWORD}, allow_redirects=False, timeout=30
    )
    assert answer.status_code == 303, answer.status_code
    return session


def post_form(session: requests.Session, url: str, page: str, **form: str) -> requests.Response:
    csrf = csrf_of(session.get(page, timeout=10).text)
    return session.post(url, data={"csrf": csrf, **form}, timeout=10)


def entries(server, **params: str) -> list[dict]:
    answer = server.get("/api/v1/audit", user="admin", params={"limit": 500, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def test_an_admin_enrols_a_terminal_from_the_web_and_it_uploads_with_the_token_shown_once(server):
    admin = signed_in(server, "admin")
    tid = f"W-{uuid.uuid4().hex[:8]}"
    page = server.url + "/enrolment"
    enrolled = post_form(admin, page, page, action="enrol", id=tid)
    assert enrolled.status_code == 200 and enrolled.headers["cache-control"] == "no-store"
    token = re.search(r'<code id="token">(pdt_[^<]+)</code>', enrolled.text).group(1)
    snippet = re.search(r'<pre id="snippet">([^<]+)</pre>', enrolled.text).group(1)
    assert snippet.replace("&#34;", '"') == (
        f'[terminal]\nid = "{tid}"\n\n[upload]\nserver_url = "{server.url}"\ntoken = "{token}"\n'
    )
    bundle_id, body = make_bundle(token, tid)
    assert server.upload(token, body, bundle_id).status_code == 201
    listed = admin.get(page, params={"q": tid.lower()}, timeout=10).text
    assert tid in listed and token not in listed  # shown once: on the answer to the enrolment only
    again = post_form(admin, page, page, action="enrol", id=tid)
    assert again.status_code == 400 and "already enrolled" in again.text

    revoked = post_form(admin, page, page, action="revoke", id=tid)
    assert revoked.status_code == 200 and f"Terminal {tid}: token revoked." in revoked.text
    assert server.upload(token, *reversed(make_bundle(token, tid))).status_code == 401
    actions = [(e["action"], e["actor"], e["source"]) for e in entries(server, object_id=tid)]
    assert actions == [("terminal.revoke", "admin", "web"), ("terminal.enrol", "admin", "web")]


def test_admin_pages_and_forms_are_for_admins_only_and_need_their_form_token(server):
    tid, token = server.terminal("K")
    for role in ("support", "technician"):
        session = signed_in(server, role)
        for path in ("/users", "/enrolment", "/settings", "/audit"):
            assert session.get(server.url + path, timeout=10).status_code == 403, (role, path)
        csrf = csrf_of(session.get(server.url + "/", timeout=10).text)
        refused = session.post(server.url + "/enrolment", data={"csrf": csrf, "action": "revoke", "id": tid}, timeout=10)
        assert refused.status_code == 403
        assert server.get("/api/v1/audit", user=role).status_code == 403
    admin = signed_in(server, "admin")
    forged = admin.post(server.url + "/enrolment", data={"csrf": "x" * 64, "action": "revoke", "id": tid}, timeout=10)
    assert forged.status_code == 403
    assert requests.get(server.url + "/api/v1/audit", timeout=10).status_code == 401
    assert server.upload(token, *reversed(make_bundle(token, tid))).status_code == 201  # still enrolled


def test_every_user_and_terminal_change_is_audited_from_web_api_and_cli(server):
    name, tid = f"aud-{uuid.uuid4().hex[:6]}", f"A-{uuid.uuid4().hex[:8]}"
    admin = signed_in(server, "admin")
    users = server.url + "/users"
    assert post_form(admin, users, users, action="add", name=name, role="support", password=PASSWORD).status_code == 200
    assert post_form(admin, users, users, action="change", name=name, role="technician").status_code == 200
    assert post_form(admin, users, users, action="change", name=name, password="a new passphrase").status_code == 200
    assert server.post("/api/v1/terminals", user="admin", json={"id": tid}).status_code == 201
    db_url = server.service.engine.url.render_as_string(hide_password=False)
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli_main(["users", "role", name, "support", "--db", db_url]) == 0
        assert cli_main(["terminals", "revoke", tid, "--db", db_url]) == 0
    assert post_form(admin, users, users, action="remove", name=name).status_code == 200

    mine = [(e["source"], e["action"], e["detail"]) for e in entries(server, object_id=name)]
    assert mine == [
        ("web", "user.remove", {}), ("cli", "user.role", {"role": "support"}), ("web", "user.password", {}),
        ("web", "user.role", {"role": "technician"}), ("web", "user.add", {"role": "support"}),
    ]  # fmt: skip
    terminal = [(e["source"], e["action"], e["actor"]) for e in entries(server, object_kind="terminal", object_id=tid)]
    assert terminal[1] == ("api", "terminal.enrol", "admin") and terminal[0][:2] == ("cli", "terminal.revoke")
    assert all(PASSWORD not in str(e) and "passphrase" not in str(e) for e in entries(server))

    page = admin.get(server.url + "/audit", params={"object_id": name}, timeout=10).text
    assert page.count('class="audit-entry"') == 5 and "password reset" in page and "role: technician" in page


def test_the_audit_log_pages_by_cursor_and_refuses_a_bad_one(server):
    tag = uuid.uuid4().hex[:8]
    for i in range(5):
        audit.record(server.service.engine, f"pager-{tag}", "api", "terminal.enrol", "terminal", f"P-{tag}-{i}")
    seen, cursor = [], None
    while True:
        params = {"actor": f"pager-{tag}", "limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = server.get("/api/v1/audit", user="admin", params=params)
        seen += [e["object_id"] for e in answer.json()["items"]]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"P-{tag}-{i}" for i in reversed(range(5))]
    assert server.get("/api/v1/audit", user="admin", params={"cursor": "nonsense"}).json()["error"] == "bad_cursor"


def test_the_settings_page_shows_the_effective_config_with_secrets_masked(server):
    page = signed_in(server, "admin").get(server.url + "/settings", timeout=10).text
    assert "server.session_hours" in page and "server.retention.days" in page and "server.fleet.outage_scopes" in page
    assert 'id="masked-server.webhooks.secret"' not in page  # empty: shown as empty, not as set
    hook = dataclasses.replace(
        default_settings().webhooks, url="https://hook:pw123@alerts.example.com/in?key=k42", secret="whsec-9"
    )
    settings = dataclasses.replace(default_settings(), webhooks=hook)
    rows = {key: (value, masked) for key, value, masked in admin_web.settings_rows(settings)}
    assert rows["server.webhooks.secret"] == ("", True)
    assert rows["server.webhooks.url"] == ('"https://•••@alerts.example.com/in?•••"', False)
    assert rows["server.blobs.secret_access_key"] == ("", False)  # unset: nothing to mask
    assert not any(s in str(rows) for s in ("pw123", "k42", "whsec-9"))


def test_admin_pages_speak_chinese(server):
    name = f"zh-admin-{uuid.uuid4().hex[:6]}"
    store.add_user(server.service.engine, name, "admin", PASSWORD)
    store.set_user_lang(server.service.engine, name, "zh")
    session = signed_in(server, name)
    for path, title in (("/users", "用户"), ("/enrolment", "终端登记"), ("/settings", "设置"), ("/audit", "审计日志")):
        page = session.get(server.url + path, timeout=10).text
        assert f"<h1>{title}</h1>" in page and "审计日志</a>" in page, path
    enrolment = server.url + "/enrolment"
    refused = post_form(session, enrolment, enrolment, action="enrol", id="-bad id")
    assert refused.status_code == 400 and "终端编号为 1-64 个字母" in refused.text


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'a.db'}" if request.param == "sqlite" else stack.enter_context(fresh_pg_database())
        eng = db.make_engine(url)
        db.create_schema(eng)
        yield eng
        eng.dispose()


def test_retention_removes_audit_entries_as_old_as_removed_bundles(engine, tmp_path):
    from remote.server.blobs import open_store

    audit.record(engine, "admin", "web", "user.add", "user", "kept")
    old = db.stamp(datetime.now(UTC) - timedelta(days=40))
    with engine.begin() as conn:
        conn.execute(db.audit_log.insert().values(
            at=old, actor="admin", source="cli", action="user.add", object_kind="user", object_id="gone", detail="{}",
        ))  # fmt: skip
    keep = dataclasses.replace(default_settings().retention, days=30)
    assert retention.plan(engine, keep).audit_entries == 1
    done = retention.run_pass(engine, open_store("", tmp_path / "data", {}), keep)
    assert done.audit_entries == 1
    assert [e["object_id"] for e in audit.entries(engine, {}, 10)[0]] == ["kept"]
    forever = dataclasses.replace(keep, days=0)
    assert retention.run_pass(engine, open_store("", tmp_path / "data", {}), forever).audit_entries == 0


def test_another_source_joins_the_log_in_time_order_and_pages_with_it(server, monkeypatch):
    """The seam for incident actions (kept in their own table): a source added with
    audit.add_source is read with the log, newest first, one cursor for both."""
    tag = uuid.uuid4().hex[:8]
    base = datetime.now(UTC) + timedelta(days=3650)  # newer than anything the log holds

    def stamp(minutes: int) -> str:
        return db.stamp(base + timedelta(minutes=minutes))

    with server.service.engine.begin() as conn:
        for minute in (0, 2, 4):
            conn.execute(db.audit_log.insert().values(
                at=stamp(minute), actor=f"seam-{tag}", source="web", action="user.add", object_kind="user",
                object_id=f"u{minute}", detail="{}",
            ))  # fmt: skip
    incident_actions = [
        {"id": f"i-{tag}-{m}", "at": stamp(m), "actor": f"seam-{tag}", "source": "web", "action": "incident.ack",
         "object_kind": "incident", "object_id": f"inc{m}", "detail": {"note": "looking"}}
        for m in (1, 3)
    ]  # fmt: skip

    def source(engine, filters, before, limit):
        rows = [e for e in incident_actions if all(e.get(k) == v for k, v in filters.items())]
        return [e for e in rows if before is None or e["at"] <= before[0]][::-1][:limit]

    monkeypatch.setattr(audit, "_extra_sources", [])
    audit.add_source(source)
    seen, cursor = [], None
    while True:
        params = {"actor": f"seam-{tag}", "limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = server.get("/api/v1/audit", user="admin", params=params).json()
        seen += [e["object_id"] for e in answer["items"]]
        if not (cursor := answer["next_cursor"]):
            break
    assert seen == ["u4", "inc3", "u2", "inc1", "u0"]
    page = signed_in(server, "admin").get(server.url + "/audit", params={"actor": f"seam-{tag}"}, timeout=10).text
    assert 'href="/incidents/inc3"' in page and "incident.ack" in page
