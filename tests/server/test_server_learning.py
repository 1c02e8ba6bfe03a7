"""Learned tables through the API of a real server: built from outcomes, served to a
terminal of the model, versioned by content, switched off and on, reverted and resumed."""

from __future__ import annotations

import json
import uuid

import requests
import sqlalchemy as sa
from outcome_bundles import uploaded

from remote.outcome_wire import table_hash
from remote.server.outcomes import tables


def learned(server, terminal_id: str, token: str) -> requests.Response:
    return requests.get(f"{server.url}/api/v1/terminals/{terminal_id}/learned", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def visit(server, model: str, found: str, terminals: list[tuple[str, str]], n: int) -> None:
    """n visits of code 3 on `model`, spread over `terminals`, each finding `found`."""
    for i in range(n):
        tid, token = terminals[i % len(terminals)]
        bid = uploaded(server, token, tid, ["network.data_session", "network.apn_wrong"], code="3", verdict="remote", model=model)
        said = server.post(f"/api/v1/bundles/{bid}/outcome", user="technician", json={"found": found, "fixed": True})
        assert said.status_code == 201, said.text


def test_a_terminal_receives_its_models_table_learned_from_visits(server):
    model = f"M50-{uuid.uuid4().hex[:6]}"
    fleet = [server.terminal("LA") for _ in range(4)]
    tid, token = fleet[0]
    assert learned(server, tid, token).json()["model"] in (model, "*", "")  # before any visit of its own
    visit(server, model, "network.apn_wrong", fleet, 12)
    table = learned(server, tid, token).json()
    assert table["schema"] == "posdiag.learned/1" and table["model"] == model and table["version"] >= 1
    entry = table["codes"]["terminal:3"]
    assert entry["n"] == 12 and entry["f"]["network.apn_wrong"] == 5.0 and entry["f"]["network.no_link"] < 1  # 5: max_factor
    assert table["hash"] == table_hash(model, table["codes"])
    assert len(requests.get(f"{server.url}/api/v1/terminals/{tid}/learned", headers={"Authorization": f"Bearer {token}"}, timeout=30).content) <= 4096
    other_tid, other_token = server.terminal("LB")
    refused = learned(server, tid, other_token)
    assert (refused.status_code, refused.json()["error"]) == (403, "wrong_terminal")
    shown = server.get("/api/v1/learning/table", params={"model": model}).json()
    assert shown["served"] == table and shown["versions"][0]["hash"] == table["hash"]
    # what a heartbeat's answer will carry: the table only when the terminal holds another
    assert tables.for_heartbeat(server.service.engine, tid, None) == table
    assert tables.for_heartbeat(server.service.engine, tid, table["hash"]) is None


def heartbeat(server, terminal_id: str, token: str, model: str, held: str | None) -> requests.Response:
    body = {"terminal_id": terminal_id, "sent_at": "2026-11-30T10:00:00Z", "model": model, "learned_hash": held}
    return requests.post(f"{server.url}/api/v1/heartbeats", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_heartbeats_answer_carries_the_table_only_when_the_terminal_holds_another(server):
    model = f"M52-{uuid.uuid4().hex[:6]}"
    fleet = [server.terminal("LH") for _ in range(4)]
    tid, token = fleet[0]
    first = heartbeat(server, tid, token, model, None)
    assert first.status_code == 202, first.text
    fleets = first.json()["learned"]  # nothing learned for this model yet: the fleet's table (or the empty one)
    assert fleets["schema"] == "posdiag.learned/1" and fleets["model"] in ("*", model)
    assert heartbeat(server, tid, token, model, fleets["hash"]).json()["learned"] is None
    visit(server, model, "network.apn_wrong", fleet, 12)
    answer = heartbeat(server, tid, token, model, fleets["hash"])
    table = answer.json()["learned"]
    assert table == learned(server, tid, token).json() and table["model"] == model
    assert len(json.dumps(table).encode()) <= 4096 and len(answer.content) < 4096 + 300
    assert heartbeat(server, tid, token, model, table["hash"]).json()["learned"] is None
    server.post("/api/v1/learning/switch", user="admin", json={"enabled": False, "model": model})
    off = heartbeat(server, tid, token, model, table["hash"]).json()["learned"]
    assert (off["version"], off["codes"]) == (0, {})  # switched off: the terminal is told to drop it
    server.post("/api/v1/learning/switch", user="admin", json={"enabled": True, "model": model})


def test_an_admin_switches_a_model_off_reverts_and_resumes(server):
    model = f"M51-{uuid.uuid4().hex[:6]}"
    fleet = [server.terminal("LC") for _ in range(4)]
    tid, token = fleet[0]
    visit(server, model, "network.apn_wrong", fleet, 10)
    first = learned(server, tid, token).json()
    visit(server, model, "network.apn_wrong", fleet, 4)
    newer = learned(server, tid, token).json()
    assert newer["version"] > first["version"] and newer["hash"] != first["hash"]

    assert server.post("/api/v1/learning/switch", user="support", json={"enabled": False, "model": model}).status_code == 403
    off = server.post("/api/v1/learning/switch", user="admin", json={"enabled": False, "model": model})
    assert off.status_code == 200, off.text
    assert next(m for m in off.json()["models"] if m["model"] == model)["enabled"] is False
    empty = learned(server, tid, token).json()
    assert (empty["version"], empty["codes"]) == (0, {})
    server.post("/api/v1/learning/switch", user="admin", json={"enabled": True, "model": model})
    assert learned(server, tid, token).json()["hash"] == newer["hash"]

    reverted = server.post("/api/v1/learning/revert", user="admin", json={"model": model, "version": first["version"]})
    assert reverted.status_code == 200, reverted.text
    pinned = learned(server, tid, token).json()
    assert pinned["hash"] == first["hash"] and pinned["version"] == reverted.json()["changed"][model]
    visit(server, model, "network.apn_wrong", fleet, 2)  # pinned: not rebuilt
    assert learned(server, tid, token).json()["hash"] == first["hash"]
    history = server.get("/api/v1/learning/table", params={"model": model}).json()["versions"]
    assert history[0]["origin"] == f"revert:{first['version']}"

    resumed = server.post("/api/v1/learning/resume", user="admin", json={"model": model})
    assert resumed.status_code == 200 and model in resumed.json()["changed"]
    after = learned(server, tid, token).json()
    assert after["hash"] not in (first["hash"], newer["hash"]) and after["codes"]["terminal:3"]["n"] == 16

    missing = server.post("/api/v1/learning/revert", user="admin", json={"model": model, "version": 999})
    assert (missing.status_code, missing.json()["error"]) == (404, "no_version")


def test_learning_off_for_the_fleet_serves_every_terminal_an_empty_table(server):
    model = f"M52-{uuid.uuid4().hex[:6]}"
    fleet = [server.terminal("LD") for _ in range(4)]
    tid, token = fleet[0]
    visit(server, model, "network.apn_wrong", fleet, 10)
    try:
        server.post("/api/v1/learning/switch", user="admin", json={"enabled": False})
        assert learned(server, tid, token).json()["codes"] == {}
        assert server.get("/api/v1/learning").json()["enabled"] is False
    finally:
        server.post("/api/v1/learning/switch", user="admin", json={"enabled": True})
    assert learned(server, tid, token).json()["codes"]["terminal:3"]["n"] == 10


def test_a_model_whose_visits_left_the_window_gets_the_fleet_estimate_again(server):
    import dataclasses

    from remote.server.outcomes import knowledge
    from remote.server.outcomes.learning import FLEET, Params

    model = f"M53-{uuid.uuid4().hex[:6]}"
    fleet = [server.terminal("LE") for _ in range(4)]
    visit(server, model, "network.apn_wrong", fleet, 10)
    engine, settings = server.service.engine, server.service.settings.outcomes
    assert tables.latest(engine, model)["content"] != tables.latest(engine, FLEET)["content"]
    outdated = dataclasses.replace(settings, learning_window_days=1)
    with engine.begin() as conn:  # every visit of the model a year ago
        conn.execute(sa.text("UPDATE outcomes SET visited_at = '2020-01-01T00:00:00.000000Z' WHERE model = :m"), {"m": model})
    tables.rebuild(engine, knowledge.load(), Params.of(outdated), outdated.learning_window_days, "test")
    assert tables.latest(engine, model)["content"] == tables.latest(engine, FLEET)["content"]
