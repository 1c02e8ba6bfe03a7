"""The running agent (`posdiag run`) and a real support server closing the loop: a visit
outcome recorded at the terminal goes out with the agent's own flush."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def outcome_files(a) -> list:
    return list(a.outbox.glob("*.outcome.json"))


def last_heartbeat(a) -> str | None:
    listed = a.server.get("/api/v1/terminals", params={"limit": 500}).json()["items"]
    return next(t["last_heartbeat_at"] for t in listed if t["id"] == a.terminal)


def test_the_agent_sends_a_visit_outcome_with_its_flush_once(agent):
    a = agent(upload_retry_seconds=1.0, snapshot_interval_seconds=1.0)
    a.start()
    a.write("txn 1 response code: 96")
    [bundle] = a.wait_for(1, 60.0)
    a.wait_idle(60.0)
    found = bundle["top_cause"]
    closed = run_cli("visit", "close", "--found", found, "--fixed", "--by", "li.wei", "--bundle", bundle["id"],
                     "--no-upload", "--json", "--config", str(a.config))  # fmt: skip
    assert closed.returncode == 0, closed.stderr
    outcome_id = json.loads(closed.stdout)["outcome"]["outcome_id"]
    a.wait_until(lambda: not outcome_files(a), 30.0, "the agent to send the outcome record")
    shown = a.server.get(f"/api/v1/bundles/{bundle['id']}/outcome").json()
    assert (shown["current"]["outcome_id"], shown["current"]["found"], shown["current"]["via"]) == (outcome_id, found, "terminal")
    assert len(shown["history"]) == 1
    a.wait_for_log("uploaded 1 visit outcome(s)", 10.0)
    a.stop()


def test_the_agent_receives_its_models_table_with_a_heartbeat_and_diagnoses_with_it(agent, support_server):
    from outcome_bundles import uploaded  # tests/server, on the path once support_server runs

    fleet = [support_server.terminal("LT") for _ in range(4)]
    for i in range(12):  # visits of E3 on the agent's model, spread over terminals
        tid, token = fleet[i % len(fleet)]
        bid = uploaded(support_server, token, tid, ["printer.mechanism_fault", "printer.not_connected"], model="SIM-POS")
        said = support_server.post(f"/api/v1/bundles/{bid}/outcome", user="technician", json={"found": "printer.not_connected", "fixed": True})
        assert said.status_code == 201, said.text
    served = support_server.get("/api/v1/learning/table", params={"model": "SIM-POS"}).json()["served"]
    assert served["model"] == "SIM-POS" and served["version"] >= 1

    a = agent(heartbeat_seconds=1.0)
    a.start()
    kept = a.workdir / "state" / "learned.json"
    a.wait_until(kept.exists, 30.0, "the learned table a heartbeat's answer carries")
    assert json.loads(kept.read_text())["hash"] == served["hash"]
    kept_line = f"learned table SIM-POS version {served['version']} kept ({served['hash']}"
    a.wait_for_log(kept_line, 10.0)
    beat = last_heartbeat(a)
    a.wait_until(lambda: last_heartbeat(a) != beat, 30.0, "another heartbeat")
    assert a.stderr.read_text().count(kept_line) == 1  # held: later answers do not carry it again
    diagnosed = run_cli("diagnose", "--code", "E3", "--simulate", "printer.offline", "--lang", "en", "--role", "technician",
                        "--config", str(a.config))  # fmt: skip
    assert diagnosed.returncode == 0, diagnosed.stderr
    assert "learned from 12 visits (12 on this model)" in diagnosed.stdout
    a.stop()
