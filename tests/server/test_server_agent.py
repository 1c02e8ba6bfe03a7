"""The terminal side against the real server: a bundle built by agent.bundle is accepted as
is, and `posdiag commands poll` closes a probe request end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent import bundle

POSDIAG = Path(sys.executable).parent / "posdiag"


def test_a_bundle_built_by_the_agent_is_accepted(server):
    tid, token = server.terminal("AG")
    diagnosis = {
        "error": {"code": "A0", "scheme": "cup", "known": True, "meaning": {"zh": "MAC校验错", "en": "MAC error"}, "host_answer": True},
        "causes": [{"id": "security.keys_out_of_sync", "category": "security", "confidence": 0.8}],
        "dispatch": {"verdict": "remote", "reason": {"zh": "签到", "en": "sign in again"}},
    }
    inp = bundle.BundleInput(
        terminal={"id": tid, "serial": "S", "model": "P2", "firmware": "9", "app_version": "1"},
        trigger=bundle.Trigger("error", "A0", "cup"),
        diagnosis=diagnosis,
        probes={"probes": []},
        system={},
    )
    built = bundle.build(inp, bundle.Limits(), token)
    response = server.upload(token, built.data, built.bundle_id)
    assert response.status_code == 201, response.text
    record = response.json()
    assert (record["code"], record["scheme"], record["top_cause"], record["verdict"]) == ("A0", "cup", "security.keys_out_of_sync", "remote")


def test_commands_poll_runs_the_request_and_closes_it(server, tmp_path):
    tid, token = server.terminal("CP")
    command = server.post(f"/api/v1/terminals/{tid}/commands", json={"probes": ["power"], "code": "E3"}).json()
    config = tmp_path / "posdiag.toml"
    config.write_text(
        f'[terminal]\nid = "{tid}"\n'
        f'[outbox]\ndir = "{tmp_path / "outbox"}"\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[upload]\nserver_url = "{server.url}"\ntoken = "{token}"\n'
    )
    done = subprocess.run(
        [str(POSDIAG), "commands", "poll", "--json", "--simulate", "healthy", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    bundle_id = json.loads(done.stdout.strip().splitlines()[-1])["bundle_id"]
    listed = server.get(f"/api/v1/terminals/{tid}/commands").json()
    assert (listed[0]["id"], listed[0]["status"], listed[0]["bundle_id"]) == (command["id"], "done", bundle_id)
    record = server.get(f"/api/v1/bundles/{bundle_id}").json()["record"]
    assert (record["trigger_kind"], record["command_id"], record["code"]) == ("remote", command["id"], "E3")
    again = subprocess.run(
        [str(POSDIAG), "commands", "poll", "--json", "--simulate", "healthy", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"command": None}
