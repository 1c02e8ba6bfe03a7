"""Probe requests: asked by a user, taken once by the terminal, closed by the bundle that answers."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
import sqlalchemy as sa
from server_bundles import make_bundle

from remote.server.db import commands


def poll(server, tid: str, token: str) -> requests.Response:
    return requests.get(
        f"{server.url}/api/v1/terminals/{tid}/commands/next", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_request_poll_answer_closes_the_command(server):
    tid, token = server.terminal()
    asked = server.post(f"/api/v1/terminals/{tid}/commands", user="technician", json={"probes": ["printer", "network"], "code": "E3"})
    assert asked.status_code == 201, asked.text
    command = asked.json()
    assert command["status"] == "queued" and command["requested_by"] == "technician"

    taken = poll(server, tid, token)
    assert taken.status_code == 200
    assert taken.json() == {"command_id": command["id"], "probes": ["printer", "network"], "code": "E3"}
    assert poll(server, tid, token).status_code == 204

    bundle_id, body = make_bundle(token, tid, trigger="remote", command_id=command["id"], code="E3")
    assert server.upload(token, body, bundle_id).status_code == 201
    listed = server.get(f"/api/v1/terminals/{tid}/commands").json()
    assert listed[0]["id"] == command["id"]
    assert (listed[0]["status"], listed[0]["bundle_id"]) == ("done", bundle_id)
    assert server.get("/api/v1/bundles", params={"terminal": tid}).json()["items"][0]["command_id"] == command["id"]


def test_null_probes_means_all_and_order_is_oldest_first(server):
    tid, token = server.terminal()
    first = server.post(f"/api/v1/terminals/{tid}/commands", json={}).json()
    second = server.post(f"/api/v1/terminals/{tid}/commands", json={"probes": None}).json()
    assert poll(server, tid, token).json() == {"command_id": first["id"], "probes": None, "code": None}
    assert poll(server, tid, token).json()["command_id"] == second["id"]


def test_a_bundle_cannot_close_another_terminals_command(server):
    tid_a, _ = server.terminal()
    tid_b, token_b = server.terminal()
    command = server.post(f"/api/v1/terminals/{tid_a}/commands", json={}).json()
    bundle_id, body = make_bundle(token_b, tid_b, trigger="remote", command_id=command["id"])
    assert server.upload(token_b, body, bundle_id).status_code == 201
    assert server.get(f"/api/v1/terminals/{tid_a}/commands").json()[0]["status"] == "queued"


def test_only_the_terminal_itself_polls_its_queue(server):
    tid_a, _ = server.terminal()
    _, token_b = server.terminal()
    response = poll(server, tid_a, token_b)
    assert response.status_code == 403 and response.json()["error"] == "wrong_terminal"


def test_racing_polls_hand_a_command_out_once(server):
    tid, token = server.terminal()
    server.post(f"/api/v1/terminals/{tid}/commands", json={})
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda _: poll(server, tid, token).status_code, range(8)))
    assert codes == [200] + [204] * 7


def test_unanswered_command_is_handed_out_again_later(server):
    tid, token = server.terminal()
    command = server.post(f"/api/v1/terminals/{tid}/commands", json={}).json()
    assert poll(server, tid, token).status_code == 200
    assert poll(server, tid, token).status_code == 204
    with server.service.engine.begin() as conn:  # as if delivered long before the redelivery time
        conn.execute(commands.update().where(commands.c.id == command["id"]).values(delivered_at="2000-01-01T00:00:00.000000Z"))
    assert poll(server, tid, token).json()["command_id"] == command["id"]


def test_bad_requests(server):
    tid, _ = server.terminal()
    assert server.post(f"/api/v1/terminals/T-none-{uuid.uuid4().hex[:6]}/commands", json={}).status_code == 404
    bad = server.post(f"/api/v1/terminals/{tid}/commands", json={"probes": ["rm -rf /"]})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
    assert server.post(f"/api/v1/terminals/{tid}/commands", data="not json", headers={"Content-Type": "application/json"}).status_code == 422
    with server.service.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(commands).where(commands.c.terminal_id == tid)).scalar_one() == 0
