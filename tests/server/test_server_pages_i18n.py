"""The pages as issue 11 asked: one language at a time, chosen per user and remembered;
filters support types; a page for unknown addresses; user administration."""

from __future__ import annotations

import re

import requests
from server_bundles import PASSWORD, make_bundle
from test_server_pages import csrf_of, signed_in

HAN = re.compile(r"[\u4e00-\u9fff]")


def visible_text(html: str) -> str:
    """The words a person reads: no tags, no attribute values, no data from the terminal."""
    body = html.split("<body>", 1)[1]
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", body, flags=re.S)
    return re.sub(r"<[^>]+>", " ", body)


def switch(session: requests.Session, server, lang: str, back: str = "/bundles") -> requests.Response:
    page = session.get(server.url + back, timeout=10)
    return session.post(server.url + "/lang", data={"csrf": csrf_of(page.text), "lang": lang, "next": back}, timeout=10)


def own_user(server, role: str = "support") -> str:
    """A user of this test alone: a language it chooses is remembered, and must not leak."""
    import uuid

    from remote.server import store

    name = f"{role}-{uuid.uuid4().hex[:8]}"
    store.add_user(server.service.engine, name, role, PASSWORD)
    return name


def test_one_language_at_a_time_remembered_for_the_user(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, code="51")
    server.upload(token, body, bundle_id)
    user = own_user(server)
    session = signed_in(server, user)
    english = session.get(f"{server.url}/bundles/{bundle_id}", timeout=10).text
    assert "insufficient funds" in english and "余额不足" not in english and 'lang="en"' in english
    assert not HAN.search(visible_text(english).replace("中文", ""))  # only the switch names its language

    assert switch(session, server, "zh", f"/bundles/{bundle_id}").url.endswith(f"/bundles/{bundle_id}")
    chinese = session.get(f"{server.url}/bundles/{bundle_id}", timeout=10).text
    assert "余额不足" in chinese and "insufficient funds" not in chinese and 'lang="zh"' in chinese
    assert "派单" in chinese and "Dispatch" not in chinese and "检测结果" in chinese

    # remembered for the user, not the browser: a new sign-in elsewhere gets Chinese too
    elsewhere = signed_in(server, user).get(server.url + "/overview", timeout=10).text
    assert "机群概况" in elsewhere
    switch(session, server, "en")
    assert "Fleet, last" in signed_in(server, user).get(server.url + "/overview", timeout=10).text


def test_without_a_choice_the_browser_language_decides(server):
    session = signed_in(server, "technician")
    page = session.get(server.url + "/bundles", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}, timeout=10)
    assert "诊断包" in page.text and 'lang="zh"' in page.text
    page = session.get(server.url + "/bundles", headers={"Accept-Language": "de-DE,en;q=0.5"}, timeout=10)
    assert 'lang="en"' in page.text


def test_model_and_firmware_match_case_insensitive_prefixes_and_dispatch_filters(server):
    tid, token = server.terminal()
    made = {}
    for model, firmware, verdict in (("A920", "V2.1.3", "merchant"), ("a930", "v2.2.0", "onsite"), ("P2", "V3.0", "none")):
        bundle_id, body = make_bundle(token, tid, model=model, firmware=firmware, verdict=verdict)
        assert server.upload(token, body, bundle_id).status_code == 201
        made[model] = bundle_id
    session = signed_in(server)

    def found(query: str) -> set[str]:
        html = session.get(f"{server.url}/bundles?terminal={tid}&{query}", timeout=10).text
        return {m for m, b in made.items() if f"/bundles/{b}" in html}

    assert found("model=a9") == {"A920", "a930"}
    assert found("firmware=V2.") == {"A920", "a930"}
    assert found("firmware=v2.1") == {"A920"}
    assert found("model=%25") == set()  # a LIKE wildcard is a character, not a pattern
    assert found("verdict=merchant") == {"A920"}
    assert found("verdict=none") == {"P2"}
    api = server.get(f"/api/v1/bundles?terminal={tid}&verdict=onsite&model=A9").json()["items"]
    assert [r["id"] for r in api] == [made["a930"]]


def test_lists_show_cause_titles_beside_ids_and_times_for_the_viewer(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, cause="printer.paper_out", category="printer")
    server.upload(token, body, bundle_id)
    html = signed_in(server).get(f"{server.url}/bundles?terminal={tid}", timeout=10).text
    assert re.search(r"printer out of paper|paper", html.split("printer.paper_out")[0].rsplit("<td>", 1)[1], re.I)
    stamp = re.search(r'<time datetime="([^"]+Z)" title="([^"]+) UTC">', html)
    assert stamp and stamp.group(1)[:19].replace("T", " ") == stamp.group(2)
    assert requests.get(server.url + "/static/local-time.js", timeout=10).headers["content-type"].startswith("text/javascript")


def test_unknown_addresses_answer_a_page_to_browsers_and_json_to_the_api(server):
    session = signed_in(server)
    page = session.get(server.url + "/no/such/page", headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "There is no page at this address." in page.text and 'href="/bundles"' in page.text
    api = session.get(server.url + "/api/v1/nothing", headers={"Accept": "text/html"}, timeout=10)
    assert api.status_code == 404 and api.json()["error"] == "not_found"
    assert requests.get(server.url + "/no/such/page", timeout=10).json()["error"] == "not_found"  # a script


def test_admins_manage_users_on_a_page_and_others_may_not(server):
    assert signed_in(server, "support").get(server.url + "/users", timeout=10).status_code == 403
    admin = signed_in(server, "admin")
    page = admin.get(server.url + "/users", timeout=10)
    assert page.status_code == 200 and "support" in page.text and "password_hash" not in page.text

    def post(**fields) -> requests.Response:
        token = csrf_of(admin.get(server.url + "/users", timeout=10).text)
        return admin.post(server.url + "/users", data={"csrf": token, **fields}, timeout=10)

    assert "User carol added." in post(action="add", name="carol", role="support", password="correct horse").text
    assert "at least 10 characters" in post(action="add", name="dave", role="support", password="short").text
    post(action="change", name="carol", role="technician")
    post(action="change", name="carol", password="battery staple")
    carol = requests.Session()
    login = carol.get(server.url + "/login", timeout=10)
    done = carol.post(server.url + "/login", data={"csrf": csrf_of(login.text), "name": "carol", "password": "battery staple", "next": "/"}, timeout=10)
    assert "carol (technician)" in done.text
    assert "cannot remove yourself" in post(action="remove", name="admin").text
    assert "User carol removed." in post(action="remove", name="carol").text
    assert carol.get(server.url + "/", allow_redirects=False, timeout=10).status_code == 303  # signed out with the user
