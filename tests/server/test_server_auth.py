"""Who may do what: terminal tokens, user roles, passwords, sessions; and the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from server_bundles import PASSWORD, make_bundle

from remote.server import auth

CLI = Path(sys.executable).parent / "posdiag-support"


def test_password_hash_is_salted_scrypt_and_checks():
    one, two = auth.hash_password("hunter22!"), auth.hash_password("hunter22!")
    assert one != two and one.startswith("scrypt$16384$8$1$")
    assert auth.check_password("hunter22!", one)
    assert not auth.check_password("hunter23!", one)
    assert not auth.check_password("x", "garbage")


def test_session_cookie_is_signed_and_expires():
    signer = auth.Signer(b"k" * 32)
    cookie = signer.session_cookie("u-alice", 3, 60)
    assert (signer.read_session(cookie).uid, signer.read_session(cookie).generation) == ("u-alice", 3)
    payload, mac = cookie.split(".")
    forged = auth.Signer(b"x" * 32).session_cookie("u-admin", 0, 60)
    assert signer.read_session(forged) is None
    assert signer.read_session(payload[:-2] + "AA." + mac) is None
    assert signer.read_session(signer.session_cookie("u-alice", 3, -1)) is None
    assert signer.read_session("é.ü") is None and signer.read_session(None) is None


def test_terminal_token_reads_nothing_but_its_queue(server):
    tid, token = server.terminal()
    bearer = {"Authorization": f"Bearer {token}"}
    for path in ("/api/v1/bundles", "/api/v1/stats", "/api/v1/terminals", f"/api/v1/terminals/{tid}/commands"):
        response = requests.get(server.url + path, headers=bearer, timeout=10)
        assert response.status_code == 401, path
    response = requests.post(server.url + f"/api/v1/terminals/{tid}/commands", json={}, headers=bearer, timeout=10)
    assert response.status_code == 401
    assert requests.get(server.url + f"/api/v1/terminals/{tid}/commands/next", headers=bearer, timeout=10).status_code in (200, 204)


def test_users_cannot_poll_a_terminals_queue(server):
    tid, _ = server.terminal()
    response = server.get(f"/api/v1/terminals/{tid}/commands/next")
    assert response.status_code == 401


def test_wrong_password_and_unknown_user_are_401(server):
    assert requests.get(server.url + "/api/v1/bundles", auth=("support", "wrong"), timeout=10).status_code == 401
    assert requests.get(server.url + "/api/v1/bundles", auth=("nobody", PASSWORD), timeout=10).status_code == 401
    response = requests.get(server.url + "/api/v1/bundles", timeout=10)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Basic"


@pytest.mark.parametrize("role", ["support", "technician", "admin"])
def test_every_role_reads_and_requests_probes(server, role):
    tid, _ = server.terminal()
    assert server.get("/api/v1/bundles", user=role).status_code == 200
    assert server.post(f"/api/v1/terminals/{tid}/commands", user=role, json={"probes": ["printer"]}).status_code == 201


@pytest.mark.parametrize("role", ["support", "technician"])
def test_only_admin_enrols_and_revokes(server, role):
    name = f"E-{uuid.uuid4().hex[:8]}"
    assert server.post("/api/v1/terminals", user=role, json={"id": name}).status_code == 403
    enrolled = server.post("/api/v1/terminals", user="admin", json={"id": name})
    assert enrolled.status_code == 201 and enrolled.json()["token"].startswith("pdt_")
    assert server.post("/api/v1/terminals", user="admin", json={"id": name}).status_code == 409
    assert requests.delete(server.url + f"/api/v1/terminals/{name}", auth=(role, PASSWORD), timeout=10).status_code == 403
    assert requests.delete(server.url + f"/api/v1/terminals/{name}", auth=("admin", PASSWORD), timeout=10).status_code == 204
    token = enrolled.json()["token"]
    polled = requests.get(server.url + f"/api/v1/terminals/{name}/commands/next", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert polled.status_code == 401


def test_session_cookie_reads_the_api_but_never_changes_anything(server):
    from remote.server.api import SESSION_COOKIE

    tid, _ = server.terminal()
    cookie = {SESSION_COOKIE: server.service.session_cookie(server.service.user("support"))}
    assert requests.get(server.url + "/api/v1/bundles", cookies=cookie, timeout=10).status_code == 200
    posted = requests.post(server.url + f"/api/v1/terminals/{tid}/commands", json={}, cookies=cookie, timeout=10)
    assert posted.status_code == 401


def run(data: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "--data", str(data), *args], capture_output=True, text=True, input=input, timeout=60, check=False
    )


def test_cli_terminals_and_users(tmp_path):
    added = run(tmp_path, "terminals", "add", "T-cli")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("pdt_") and "shown only this once" in added.stderr
    assert token not in (tmp_path / "posdiag-support.db").read_bytes().decode("latin-1")
    assert run(tmp_path, "terminals", "add", "T-cli").returncode == 2
    listed = subprocess.run(
        [str(CLI), "terminals", "list", "--data", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "T-cli" in listed.stdout and "active" in listed.stdout
    assert run(tmp_path, "terminals", "revoke", "T-cli").returncode == 0
    assert "revoked" in run(tmp_path, "terminals", "list").stdout
    assert run(tmp_path, "terminals", "revoke", "T-nope").returncode == 2
    assert run(tmp_path, "users", "add", "ann", "--role", "technician", input="long enough pw\n").returncode == 0
    assert run(tmp_path, "users", "add", "bob", "--role", "support", input="short\n").returncode == 2
    assert run(tmp_path, "users", "add", "cy", "--role", "king", "--password", "whatever12").returncode == 2


def test_cli_serve_answers_takes_its_config_and_stops(tmp_path):
    import socket

    token = run(tmp_path, "terminals", "add", "T-serve").stdout.strip()
    config = tmp_path / "server.toml"
    config.write_text("[server]\nmax_bundle_bytes = 4096\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(CLI), "serve", "--data", str(tmp_path), "--port", str(port), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
                time.sleep(0.1)
        assert health.json() == {"status": "ok", "database": "sqlite", "blob_store": "ok"}
        _, body = make_bundle(token, "T-serve", log_text=os.urandom(6000).hex())
        assert len(body) > 4096
        big = requests.post(f"{base}/api/v1/bundles", data=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert big.status_code == 413
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0  # uvicorn shuts down gracefully on Ctrl-C
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("bad", ["shop/7", "../etc", "a b", "-lead", "x" * 65])
def test_terminal_ids_unsafe_in_urls_or_paths_are_refused(server, bad):
    answer = server.post("/api/v1/terminals", user="admin", json={"id": bad})
    assert answer.status_code == 422 and answer.json()["error"] in ("bad_terminal_id", "invalid_request")


def test_cli_users_list_passwd_role_remove(tmp_path):
    assert run(tmp_path, "users", "add", "ann", "--role", "technician", "--password", "first password").returncode == 0
    listed = run(tmp_path, "users", "list")
    assert re.search(r"^ann\s+technician\s+-\s+\d{4}-\d\d-\d\d", listed.stdout, re.M) and "hash" not in listed.stdout
    assert run(tmp_path, "users", "passwd", "ann", input="second password\n").returncode == 0
    from remote.server import auth, db, store

    engine = db.make_engine(f"sqlite:///{tmp_path / 'posdiag-support.db'}")
    assert auth.check_password("second password", store.get_user(engine, "ann")["password_hash"])
    assert run(tmp_path, "users", "role", "ann", "admin").returncode == 0
    assert store.get_user(engine, "ann")["role"] == "admin"
    missing = run(tmp_path, "users", "passwd", "nobody", "--password", "whatever123")
    assert missing.returncode == 2 and missing.stderr.strip() == "posdiag-support: no user 'nobody'"
    last = run(tmp_path, "users", "remove", "ann")
    assert last.returncode == 2 and "ann is the last admin" in last.stderr
    assert run(tmp_path, "users", "add", "bo", "--role", "admin", "--password", "third password").returncode == 0
    assert run(tmp_path, "users", "remove", "ann").returncode == 0
    assert store.get_user(engine, "ann") is None
    assert run(tmp_path, "users", "remove", "ann").returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "mysql://u@h/db"], "unsupported database URL mysql://...: use sqlite:///PATH or postgresql://USER@HOST/DB"),
        (["--port", "70000"], "port 70000 is out of range (0-65535)"),
        (["--port", "BUSY"], "cannot listen on 127.0.0.1:BUSY: Address already in use"),
    ],
)
def test_serve_refuses_what_cannot_work_in_one_line_before_serving(tmp_path, args, message):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = [a.replace("BUSY", port) for a in args]
        done = subprocess.run([str(CLI), "serve", "--data", str(tmp_path), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"posdiag-support: {message.replace('BUSY', port)}\n"


def test_a_password_change_ends_the_users_other_sessions(server):
    """Changed on the users page or with `users passwd`: every session of that user ends (a
    stolen cookie dies with the old password), except the admin's own that made the change."""
    from test_server_pages import csrf_of, signed_in

    from remote.server import store

    clerk, boss = f"clerk-{uuid.uuid4().hex[:6]}", f"boss-{uuid.uuid4().hex[:6]}"
    store.add_user(server.service.engine, clerk, "support", PASSWORD)
    store.add_user(server.service.engine, boss, "admin", PASSWORD)

    def signed_out(session: requests.Session) -> bool:
        return session.get(server.url + "/", allow_redirects=False, timeout=10).status_code == 303

    def change_password(admin: requests.Session, name: str) -> None:
        csrf = csrf_of(admin.get(server.url + "/users", timeout=10).text)
        done = admin.post(server.url + "/users", data={"csrf": csrf, "name": name, "action": "change", "password": PASSWORD}, timeout=10)
        assert done.status_code == 200 and done.url.startswith(server.url + "/users?done="), done.text

    stolen = signed_in(server, clerk)
    db_url = server.service.engine.url.render_as_string(hide_password=False)
    passwd = subprocess.run([str(CLI), "users", "passwd", clerk, "--db", db_url, "--password", PASSWORD], capture_output=True, text=True, timeout=60)
    assert passwd.returncode == 0, passwd.stderr
    assert signed_out(stolen)

    clerk_session, here, elsewhere = signed_in(server, clerk), signed_in(server, boss), signed_in(server, boss)
    change_password(here, clerk)
    assert signed_out(clerk_session) and not signed_out(signed_in(server, clerk))
    assert not signed_out(here) and not signed_out(elsewhere)
    change_password(here, boss)  # the admin's own password: this session goes on, the others end
    assert not signed_out(here) and signed_out(elsewhere)
