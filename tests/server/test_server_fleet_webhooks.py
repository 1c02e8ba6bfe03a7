"""Webhooks to a loopback receiver: signed, retried until 2xx, none lost across a restart;
and what a terminal is told of an outage (heartbeat answer, command poll)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import sqlalchemy as sa
from server_bundles import make_bundle
from server_harness import default_settings, fresh_pg_database, start_server
from test_server_pages import signed_in

from remote.server import db, store
from remote.server.fleet.schema import webhook_deliveries

SECRET = "webhook-test-secret"
pytestmark = [pytest.mark.timeout(300), pytest.mark.clock]  # clock: the date matters (tests/clock/run.py)


class Receiver:
    """Answers 503 while `down`, else 204; keeps every body it took."""

    def __init__(self) -> None:
        self.down = True
        self.taken: list[tuple[dict, dict]] = []
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.down:
                    outer.refused += 1
                    self.send_response(503)
                else:
                    outer.taken.append((dict(self.headers), json.loads(body) | {"_raw": body.decode()}))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


def settings(url: str):
    s = default_settings()
    hooks = dataclasses.replace(s.webhooks, url=url, secret=SECRET, retry_min_seconds=0.05, retry_max_seconds=0.2, allow_private_targets=True)
    return dataclasses.replace(s, webhooks=hooks, fleet=dataclasses.replace(s.fleet, sweep_seconds=0.2))


def wait_for(check, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    return check()


def beat(tid: str, when: datetime, labels: dict[str, str]) -> dict:
    return {"terminal_id": tid, "sent_at": db.stamp(when), "model": "A920", "firmware": "1.0", "labels": labels, "health": {}, "counters": {}}


def enrol(server, prefix: str, labels: dict[str, str], now: datetime, hours_ago=(3, 2, 1), count: int = 8) -> list[str]:
    """`count` terminals PREFIX-0.. with these labels, each heard from `hours_ago`; their tokens."""
    tokens = [store.add_terminal(server.service.engine, f"{prefix}-{i}") for i in range(count)]
    for i, token in enumerate(tokens):
        for hours in hours_ago:
            answer = requests.post(f"{server.url}/api/v1/heartbeats", json=beat(f"{prefix}-{i}", now - timedelta(hours=hours), labels), headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert answer.status_code == 202, answer.text
    return tokens


def test_outage_webhook_survives_a_restart_and_terminals_are_told(db_url, tmp_path):
    receiver = Receiver()
    labels = {"acquirer": "Z", "region": "east"}
    now = datetime.now(UTC)
    first = start_server(db_url, tmp_path / "data", "hooks", settings(receiver.url))
    server = next(first)
    terminals = enrol(server, "W", labels, now)
    http = requests.Session()
    for i, token in enumerate(terminals[:7]):
        bundle_id, body = make_bundle(token, f"W-{i}", code="96", cause="host.unreachable", category="host", verdict="remote",
                                      created_at=db.stamp(now - timedelta(minutes=20 - i)), labels=labels)  # fmt: skip
        assert server.upload(token, body, bundle_id).status_code == 201

    # the eighth terminal is told, on its heartbeat and on its poll
    server.counted()  # the fleet queue has counted the bundles
    told = http.post(f"{server.url}/api/v1/heartbeats", json=beat("W-7", now, labels), headers={"Authorization": f"Bearer {terminals[7]}"}, timeout=30).json()
    assert [(i["kind"], i["scope"]) for i in told["incidents"]] == [("outage", labels)]
    assert "acquirer Z" in told["incidents"][0]["summary"]["en"]
    page = signed_in(server).get(f"{server.url}/terminals", timeout=30).text  # support sees it on every page
    assert 'id="outage-banner"' in page and f"/incidents/{told['incidents'][0]['id']}" in page
    poll = http.get(f"{server.url}/api/v1/terminals/W-7/commands/next", headers={"Authorization": f"Bearer {terminals[7]}"}, timeout=30)
    assert poll.status_code == 204 and json.loads(poll.headers["X-Posdiag-Incidents"])[0]["id"] == told["incidents"][0]["id"]
    store.add_command(server.service.engine, "W-7", ["network"], None, "support")
    poll = http.get(f"{server.url}/api/v1/terminals/W-7/commands/next", headers={"Authorization": f"Bearer {terminals[7]}"}, timeout=30)
    assert poll.status_code == 200 and poll.json()["probes"] == ["network"]
    assert json.loads(poll.headers["X-Posdiag-Incidents"])[0]["id"] == told["incidents"][0]["id"]

    assert 'posdiag_fleet_incidents_open{kind="outage"} 1' in requests.get(f"{server.url}/metrics", timeout=30).text
    assert wait_for(lambda: receiver.refused >= 2)  # tried, refused, retried
    first.close()  # the server stops with the delivery still owed
    receiver.down = False
    second = start_server(db_url, tmp_path / "data", "hooks", settings(receiver.url), users=False)
    restarted = next(second)

    def nothing_owed() -> bool:  # every delivery marked done: nothing more will come
        with restarted.service.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).where(webhook_deliveries.c.delivered_at.is_(None))).scalar() == 0

    try:
        assert wait_for(lambda: receiver.taken and nothing_owed())
    finally:
        second.close()
    opened = [(h, b) for h, b in receiver.taken if b["event"] == "incident.opened"]
    assert len(opened) == 1
    headers, body = opened[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), body["_raw"].encode(), hashlib.sha256).hexdigest()
    assert headers["X-Posdiag-Signature"] == expected and headers["X-Posdiag-Event"] == "incident.opened"
    assert body["data"]["kind"] == "outage" and body["data"]["scope"] == labels and body["data"]["terminals_affected"] >= 5  # at opening
    receiver.http.shutdown()


def test_one_noisy_terminal_never_opens_an_outage(db_url, tmp_path):
    """Thirty host failures in ten minutes from one terminal of eight: one distinct terminal,
    below outage_min_terminals whatever the rate; its bundles are not held."""
    labels = {"acquirer": "N", "region": "west"}
    now = datetime.now(UTC)
    servers = start_server(db_url, tmp_path / "data", "noisy", settings(""))
    server = next(servers)
    try:
        tokens = enrol(server, "N", labels, now, hours_ago=(1,))
        ids = []
        for k in range(30):
            bundle_id, body = make_bundle(tokens[0], "N-0", code="96", cause="host.unreachable", category="host", verdict="remote",
                                          created_at=db.stamp(now - timedelta(minutes=10 - k / 3)), labels=labels)  # fmt: skip
            assert server.upload(tokens[0], body, bundle_id).status_code == 201
            ids.append(bundle_id)
        server.counted()
        server.service.fleet.sweep()
        assert server.get("/api/v1/incidents").json()["items"] == []
        listed = server.get("/api/v1/bundles", params={"terminal": "N-0", "limit": 50}).json()["items"]
        assert len(listed) == 30 and all(b["fleet_dispatch"] is None for b in listed)
    finally:
        servers.close()


def test_verdict_hold_lists_the_bundles_an_outage_holds(db_url, tmp_path):
    """Support filters on `hold` (API and Bundles page): the bundles whose fleet_dispatch is a
    hold, though each keeps the terminal's own verdict (remote here)."""
    labels = {"acquirer": "H", "region": "north"}
    now = datetime.now(UTC)
    servers = start_server(db_url, tmp_path / "data", "hold", settings(""))
    server = next(servers)
    try:
        tokens = enrol(server, "H", labels, now)
        for i, token in enumerate(tokens[:7]):
            bundle_id, body = make_bundle(token, f"H-{i}", code="96", cause="host.unreachable", category="host", verdict="remote",
                                          created_at=db.stamp(now - timedelta(minutes=20 - i)), labels=labels)  # fmt: skip
            assert server.upload(token, body, bundle_id).status_code == 201
        printer_id, body = make_bundle(tokens[7], "H-7", verdict="remote", created_at=db.stamp(now - timedelta(minutes=5)), labels=labels)
        assert server.upload(tokens[7], body, printer_id).status_code == 201

        everything = server.get("/api/v1/bundles", params={"limit": 50}).json()["items"]
        held = {b["id"] for b in everything if b["fleet_dispatch"]}
        assert len(held) >= 5 and printer_id not in held
        listed = server.get("/api/v1/bundles", params={"verdict": "hold", "limit": 50}).json()["items"]
        assert {b["id"] for b in listed} == held and {b["verdict"] for b in listed} == {"remote"}
        page = signed_in(server).get(f"{server.url}/bundles", params={"verdict": "hold"}, timeout=30).text
        assert all(f"/bundles/{i}" in page for i in held) and f"/bundles/{printer_id}" not in page
    finally:
        servers.close()
