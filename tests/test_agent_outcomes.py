"""The running agent (`posdiag run`) and a real support server closing the loop: a visit
outcome recorded at the terminal goes out with the agent's own flush."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def outcome_files(a) -> list:
    return list(a.outbox.glob("*.outcome.json"))


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
