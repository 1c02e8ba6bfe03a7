"""`posdiag-support learning` as a real process on the database a running server uses:
status, show, off and on, revert and resume, rebuild."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from outcome_bundles import uploaded
from server_harness import start_server

SUPPORT = Path(sys.executable).parent / "posdiag-support"


@pytest.fixture()
def learned_server(tmp_path):
    """A SQLite server whose K300 has a learned table of two versions."""
    url = f"sqlite:///{tmp_path / 'support.db'}"
    for srv in start_server(url, tmp_path / "data", "sqlite"):
        fleet = [srv.terminal("LX") for _ in range(4)]
        for i in range(12):
            tid, token = fleet[i % 4]
            bid = uploaded(srv, token, tid, ["network.data_session", "network.apn_wrong"], code="3", verdict="remote")
            srv.post(f"/api/v1/bundles/{bid}/outcome", json={"found": "network.apn_wrong", "fixed": True})
        yield srv, url


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SUPPORT), "--db", url, "learning", *args], capture_output=True, text=True, timeout=120, check=False)


def test_status_and_show_tell_what_terminals_receive(learned_server):
    srv, url = learned_server
    status = json.loads(cli(url, "status", "--json").stdout)
    k300 = next(m for m in status["models"] if m["model"] == "K300")
    assert status["enabled"] is True and k300["version"] >= 2 and k300["codes"] == 1
    text = cli(url, "show", "K300").stdout
    assert "terminal:3" in text and "network.apn_wrong x" in text and f"v{k300['version']} " in text and "v1 " in text


def test_off_on_revert_resume_and_rebuild(learned_server):
    srv, url = learned_server
    assert cli(url, "off", "--model", "K300").returncode == 0
    assert json.loads(cli(url, "show", "K300", "--json").stdout)["served"]["codes"] == {}
    assert cli(url, "on", "--model", "K300").returncode == 0
    versions = json.loads(cli(url, "show", "K300", "--json").stdout)["versions"]
    newest, first = versions[0], versions[-1]
    done = cli(url, "revert", "K300", "1")
    assert done.returncode == 0 and "pinned" in done.stdout
    served = json.loads(cli(url, "show", "K300", "--json").stdout)["served"]
    assert served["hash"] == first["hash"] != newest["hash"] and served["version"] == newest["version"] + 1
    assert f"pinned to v{newest['version'] + 1}" in cli(url, "status").stdout
    missing = cli(url, "revert", "K300", "99")
    assert missing.returncode == 2 and "has no version 99" in missing.stderr
    assert f"learning again, now version {newest['version'] + 2}" in cli(url, "resume", "K300").stdout
    assert "nothing changed" in cli(url, "rebuild").stdout
