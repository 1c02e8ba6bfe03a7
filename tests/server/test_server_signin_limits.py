"""Sign-in under attack (issues 12 and 15): failed sign-ins are limited per user and per client
address before any scrypt is spent, the counts are shared by every server through the
database, sign-out ends a session on every server, and the sign-in form never signs a nonce
the client chose. (The flood itself: tests/reliability/test_signin_flood.py.)

Two servers (uvicorn in threads) on one fresh database each test, SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests
from server_bundles import PASSWORD
from server_harness import default_settings, fresh_pg_database, start_server

from remote.server import store


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request, tmp_path) -> Iterator[tuple]:
    settings = replace(default_settings(), signin_max_failures_per_user=5, signin_max_failures_per_address=12)
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'support.db'}" if request.param == "sqlite" else stack.enter_context(fresh_pg_database())
        first = stack.enter_context(contextlib.contextmanager(start_server)(url, tmp_path / "data", request.param, settings))
        second = stack.enter_context(
            contextlib.contextmanager(start_server)(url, tmp_path / "data", request.param, settings, users=False)
        )
        yield first, second


def basic(server, user: str, password: str) -> requests.Response:
    return requests.get(server.url + "/api/v1/terminals", auth=(user, password), timeout=30)


def login_form(base: str, session: requests.Session) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', session.get(base + "/login", timeout=10).text).group(1)


def signed_in(base: str, user: str) -> requests.Session:
    session = requests.Session()
    token = login_form(base, session)
    answer = session.post(
        base + "/login", data={"csrf": token, "name": user, "password": PASSWORD}, allow_redirects=False, timeout=30
    )
    assert answer.status_code == 303, answer.status_code
    return session


def test_failures_per_user_are_limited_on_every_server_with_retry_after(pair):
    first, second = pair
    store.add_user(first.service.engine, "victim", "support", PASSWORD)
    for i in range(5):
        assert basic(first if i % 2 else second, "victim", "wrong password").status_code == 401
    for server in (first, second):
        refused = basic(server, "victim", PASSWORD)  # even the right password waits out the window
        assert refused.status_code == 429
        assert refused.json()["error"] == "too_many_attempts"
        assert 0 < int(refused.headers["Retry-After"]) <= 900
    # The web form says the same, with Retry-After too.
    session = requests.Session()
    token = login_form(second.url, session)
    answer = session.post(second.url + "/login", data={"csrf": token, "name": "victim", "password": PASSWORD}, timeout=30)
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert basic(first, "support", PASSWORD).status_code == 200  # other users are not locked out


def test_failures_per_address_are_limited_across_user_names(pair):
    first, second = pair
    for i in range(12):
        assert basic(first, f"nobody-{i}", "guess").status_code == 401  # unknown names count too
    answer = basic(second, "nobody-new", "guess")
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0


def test_a_successful_sign_in_clears_the_users_count(pair):
    first, _ = pair
    for _ in range(4):
        assert basic(first, "technician", "wrong password").status_code == 401
    assert basic(first, "technician", PASSWORD).status_code == 200
    for _ in range(4):
        assert basic(first, "technician", "wrong again").status_code == 401
    assert basic(first, "technician", PASSWORD).status_code == 200


def test_sign_out_ends_the_session_on_every_server(pair):
    first, second = pair
    session = signed_in(first.url, "support")
    kept = session.cookies["posdiag_session"]
    assert second.get("/", user="x", cookies={"posdiag_session": kept}).status_code == 200
    page = session.get(first.url + "/", timeout=10).text
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert session.post(first.url + "/logout", data={"csrf": token}, allow_redirects=False, timeout=10).status_code == 303
    for server in (first, second):
        # The cookie a thief copied before sign-out opens nothing afterwards.
        page = requests.get(server.url + "/", cookies={"posdiag_session": kept}, allow_redirects=False, timeout=10)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        api = requests.get(server.url + "/api/v1/terminals", cookies={"posdiag_session": kept}, timeout=10)
        assert api.status_code == 401


def test_the_sign_in_form_never_signs_a_nonce_the_client_chose(pair):
    first, _ = pair
    chosen = "a" * 32
    answer = requests.get(first.url + "/login", cookies={"posdiag_csrf": chosen}, timeout=10)
    issued = answer.cookies.get("posdiag_csrf")
    assert issued and chosen not in issued  # the server issued its own
    token = re.search(r'name="csrf" value="([^"]+)"', answer.text).group(1)
    form = {"csrf": token, "name": "support", "password": PASSWORD}
    with_chosen = requests.post(
        first.url + "/login", data=form, cookies={"posdiag_csrf": chosen}, allow_redirects=False, timeout=30
    )
    assert with_chosen.status_code == 403
    with_issued = requests.post(
        first.url + "/login", data=form, cookies={"posdiag_csrf": issued}, allow_redirects=False, timeout=30
    )
    assert with_issued.status_code == 303
